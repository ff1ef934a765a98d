//! Guest → uplink (§3.2): drop what cannot leave, learn, rewrite every
//! link-layer address to the uplink MAC.

use crate::config::{DhcpMode, OtherEthertypes};
use crate::counters::Counter;
use crate::nat::{MacNat, Outbound};
use crate::table::{self, Learn, Source, Transaction};
use crate::{DropReason, MacAddr};
use std::net::IpAddr;
use std::time::Duration;
use switchyard_wire::arp::{self, ArpPacket};
use switchyard_wire::bytes::{be16, put, put16};
use switchyard_wire::checksum;
use switchyard_wire::dhcp4::{self, DhcpMessage};
use switchyard_wire::ethernet::{self, EthernetFrame, Layout};
use switchyard_wire::ipv4::{self, Ipv4Packet};
use switchyard_wire::ipv6::{self, Ipv6Packet, UpperLayer};
use switchyard_wire::ndp::{self, NdMessage};
use switchyard_wire::udp::{self, UdpDatagram};
use switchyard_wire::ParseError;

type Step = Result<(), DropReason>;

/// DHCPv6 ports.
const DHCP6_SERVER_PORT: u16 = 547;
const DHCP6_CLIENT_PORT: u16 = 546;
/// Bytes of the client-identifier option inserted in impersonate mode.
const CLIENT_ID_LEN: usize = 9;

/// What one outbound frame is, for the protocol steps.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    l2: Layout,
    port: u32,
    now: Duration,
}

/// A DHCPv4 message's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DhcpRole {
    Client,
    Server,
}

/// Classifies a UDP datagram (the IPv4 payload) as a DHCP client or server
/// message with a valid body.
fn dhcp_role(udp: &[u8]) -> Option<DhcpRole> {
    let u = UdpDatagram::new_checked(udp).ok()?;
    let body = udp.get(udp::HEADER_LEN..u.length())?;
    let m = DhcpMessage::new_checked(body).ok()?;
    match (u.src_port(), u.dst_port(), m.op()) {
        (dhcp4::CLIENT_PORT, dhcp4::SERVER_PORT, dhcp4::OP_REQUEST) => Some(DhcpRole::Client),
        (dhcp4::SERVER_PORT, dhcp4::CLIENT_PORT, dhcp4::OP_REPLY) => Some(DhcpRole::Server),
        _ => None,
    }
}

impl MacNat {
    /// Processes a frame the engine is sending to the uplink, editing it in
    /// place: `Send` means the frame now carries Mu as source and in every
    /// ARP/ND/DHCP field that named a guest, with checksums fixed.
    /// `ingress_port` is the switch port the frame came from. In
    /// [`DhcpMode::Impersonate`] the frame may grow by 9 bytes (and lose
    /// Ethernet padding). Never panics; a frame of any bytes is either sent
    /// or dropped with a reason, and counted.
    pub fn outbound(&mut self, frame: &mut Vec<u8>, ingress_port: u32, now: Duration) -> Outbound {
        match self.outbound_steps(frame, ingress_port, now) {
            Ok(()) => {
                ethernet::set_src(frame, self.uplink);
                self.counters.bump(Counter::OutRewritten);
                Outbound::Send
            }
            Err(reason) => {
                self.counters.bump(reason.counter());
                Outbound::Drop(reason)
            }
        }
    }

    fn outbound_steps(&mut self, frame: &mut Vec<u8>, port: u32, now: Duration) -> Step {
        let eth = EthernetFrame::new_checked(&frame[..]).map_err(|_| DropReason::Malformed)?;
        let (dst, src) = (eth.destination(), eth.source());
        // 1. source sanity
        if src.is_multicast() || src == self.uplink {
            return Err(DropReason::OutBadSrc);
        }
        // 2. destinations that do not exist on the wire
        if dst == self.uplink {
            return Err(DropReason::OutToUplinkMac);
        }
        if !dst.is_multicast() && self.table.is_guest(dst) {
            return Err(DropReason::OutToGuestMac);
        }
        // 3. link-local reserved groups
        if dst.is_reserved_group() {
            return Err(DropReason::OutReservedGroup);
        }
        let l2 = eth.layout().map_err(|_| DropReason::Malformed)?;
        // 4. Wi-Fi control ethertypes
        if matches!(
            l2.ethertype,
            ethernet::EAPOL | ethernet::RSN_PREAUTH | ethernet::TDLS
        ) {
            return Err(DropReason::OutWifiControl);
        }
        // 5. record the guest MAC
        if !self
            .table
            .note_guest(src, port, now, self.config.limits.guests)
        {
            self.counters.bump(Counter::TableFull);
        }
        let c = Ctx { l2, port, now };
        match l2.ethertype {
            ethernet::ARP => self.out_arp(frame, &c),
            ethernet::IPV4 => self.out_ipv4(frame, &c),
            ethernet::IPV6 => self.out_ipv6(frame, &c),
            other => self.out_other(other, &c),
        }
    }

    /// Learns `key → src`; `Conflict` comes back when another guest keeps it.
    fn learn_from(&mut self, key: (u16, IpAddr), c: &Ctx, source: Source) -> Learn {
        self.table.learn(
            key,
            c.l2.src,
            c.port,
            source,
            c.now,
            false,
            &self.config,
            &mut self.counters,
        )
    }

    fn wire_owned(&self, key: (u16, IpAddr), now: Duration) -> bool {
        self.table.is_wire_owned(key, now, self.config.wire_aging)
    }

    /// A guest MAC that must not leave: the frame's source or any known guest.
    fn names_guest(&self, mac: MacAddr, src: MacAddr) -> bool {
        mac != self.uplink && (mac == src || self.table.is_guest(mac))
    }

    /// 6. ARP.
    fn out_arp(&mut self, frame: &mut [u8], c: &Ctx) -> Step {
        let Some(body) = frame.get_mut(c.l2.payload..) else {
            return Ok(());
        };
        // Anything but Ethernet/IPv4 request/reply is "other ARP": unedited.
        let Ok(mut arp) = ArpPacket::new_checked(body) else {
            return Ok(());
        };
        let (op, sha, spa, tha, tpa) = (arp.op(), arp.sha(), arp.spa(), arp.tha(), arp.tpa());
        let src = c.l2.src;
        if !spa.is_unspecified() {
            let key = (c.l2.vlan, IpAddr::V4(spa));
            if self.table.is_host(key.1) {
                return Err(DropReason::OutSpoofHostAddr);
            }
            let claim = op == arp::OP_REPLY || spa == tpa;
            if self.wire_owned(key, c.now) {
                if claim || self.config.strict_source {
                    return Err(DropReason::OutSpoofWireAddr);
                }
            } else if sha == src
                && table::learnable_v4(spa)
                && self.learn_from(key, c, Source::Arp) == Learn::Conflict
            {
                return Err(DropReason::Conflict);
            }
        }
        if self.names_guest(sha, src) {
            arp.set_sha(self.uplink);
        }
        if self.names_guest(tha, src) {
            arp.set_tha(self.uplink);
        }
        Ok(())
    }

    /// 7. IPv4 and DHCPv4.
    fn out_ipv4(&mut self, frame: &mut Vec<u8>, c: &Ctx) -> Step {
        let pl = c.l2.payload;
        let ip = Ipv4Packet::new_checked(frame.get(pl..).unwrap_or_default())
            .map_err(|_| DropReason::Malformed)?;
        let (src_ip, hl, total) = (ip.src(), ip.header_len(), ip.total_len());
        let role = if !ip.is_fragment() && ip.protocol() == ipv4::PROTO_UDP {
            frame.get(pl + hl..pl + total).and_then(dhcp_role)
        } else {
            None
        };
        if role == Some(DhcpRole::Server) && !self.config.allow_guest_servers {
            return Err(DropReason::OutServerRole);
        }
        let key = (c.l2.vlan, IpAddr::V4(src_ip));
        if self.table.is_host(key.1) {
            return Err(DropReason::OutSpoofHostAddr);
        }
        if table::learnable_v4(src_ip) {
            if self.wire_owned(key, c.now) {
                if self.config.strict_source {
                    return Err(DropReason::OutSpoofWireAddr);
                }
            } else if self.learn_from(key, c, Source::Ip) == Learn::Conflict
                && self.config.strict_source
            {
                return Err(DropReason::Conflict);
            }
        }
        if role == Some(DhcpRole::Client) {
            self.out_dhcp_client(frame, c, hl, total)?;
        }
        Ok(())
    }

    /// DHCP client message: broadcast flag or impersonation; RELEASE unbinds.
    fn out_dhcp_client(&mut self, frame: &mut Vec<u8>, c: &Ctx, hl: usize, total: usize) -> Step {
        let pl = c.l2.payload;
        let udp_off = pl + hl;
        let ip_end = pl + total;
        let Some(Ok(u)) = frame.get(udp_off..ip_end).map(UdpDatagram::new_checked) else {
            return Ok(());
        };
        let (udp_len, csum) = (u.length(), u.checksum());
        let body = udp_off + udp::HEADER_LEN..udp_off + udp_len;
        let Some(Ok(m)) = frame.get(body.clone()).map(DhcpMessage::new_checked) else {
            return Ok(());
        };
        let (xid, flags, ciaddr, giaddr, chaddr) =
            (m.xid(), m.flags(), m.ciaddr(), m.giaddr(), m.chaddr());
        let (mtype, has_client_id, end_opt) = (
            m.message_type(),
            m.option(dhcp4::OPT_CLIENT_ID).is_some(),
            m.end_offset(),
        );
        let pad = end_opt.map_or(0, |e| m.pad_after(e));
        let src = c.l2.src;

        if mtype == Some(dhcp4::RELEASE) && !ciaddr.is_unspecified() {
            let key = (c.l2.vlan, IpAddr::V4(ciaddr));
            if self.table.owner(key.0, key.1) == Some(src) {
                self.table.remove_entry(key);
            }
        }

        match self.config.dhcp {
            DhcpMode::BroadcastFlag => {
                if giaddr.is_unspecified()
                    && ciaddr.is_unspecified()
                    && flags & dhcp4::FLAG_BROADCAST == 0
                {
                    let new = flags | dhcp4::FLAG_BROADCAST;
                    if let Some(Ok(mut m)) = frame.get_mut(body).map(DhcpMessage::new_checked) {
                        m.set_flags(new);
                    }
                    if csum != 0 {
                        let check = checksum::udp_wire(checksum::update_word(csum, flags, new));
                        if let Some(Ok(mut u)) =
                            frame.get_mut(udp_off..ip_end).map(UdpDatagram::new_checked)
                        {
                            u.set_checksum(check);
                        }
                    }
                    self.counters.bump(Counter::DhcpBcastFlagSet);
                }
                Ok(())
            }
            DhcpMode::Impersonate => {
                let insert_at = match (has_client_id, end_opt) {
                    (true, _) => None,
                    (false, Some(end)) => Some(body.start + end),
                    (false, None) => return Err(DropReason::Malformed),
                };
                let grow = insert_at.is_some() && pad < CLIENT_ID_LEN;
                if grow && (total + CLIENT_ID_LEN > self.config.mtu.min(usize::from(u16::MAX))) {
                    return Err(DropReason::DhcpNoRoom);
                }
                let t = Transaction {
                    guest: src,
                    port: c.port,
                    chaddr,
                    at: c.now,
                };
                self.table.note_xid(xid, t, self.config.limits.xids);
                if let Some(Ok(mut m)) = frame.get_mut(body.clone()).map(DhcpMessage::new_checked) {
                    m.set_chaddr(self.uplink);
                }
                let mut udp_len = udp_len;
                if let Some(at) = insert_at {
                    let mut opt = [0u8; CLIENT_ID_LEN];
                    opt[..3].copy_from_slice(&[dhcp4::OPT_CLIENT_ID, 7, 1]);
                    opt[3..].copy_from_slice(&src.0);
                    if grow {
                        frame.truncate(ip_end);
                        frame.splice(at..at, opt);
                        udp_len += CLIENT_ID_LEN;
                        // Both fit in u16: total + 9 ≤ min(mtu, 65535) and udp_len ≤ total.
                        let new_total = u16::try_from(total + CLIENT_ID_LEN).unwrap_or(u16::MAX);
                        if let Some(Ok(mut ip)) = frame.get_mut(pl..).map(Ipv4Packet::new_checked) {
                            ip.set_total_len(new_total);
                        }
                        if let Some(Ok(mut u)) =
                            frame.get_mut(udp_off..).map(UdpDatagram::new_checked)
                        {
                            u.set_len(u16::try_from(udp_len).unwrap_or(u16::MAX));
                        }
                    } else {
                        put(frame, at, &opt);
                        put(frame, at + CLIENT_ID_LEN, &[255]);
                    }
                }
                if csum != 0 {
                    self.fix_udp4_checksum(frame, pl, udp_off, udp_len);
                }
                self.counters.bump(Counter::DhcpImpersonated);
                Ok(())
            }
        }
    }

    /// Recomputes a UDP-over-IPv4 checksum from scratch.
    fn fix_udp4_checksum(&self, frame: &mut [u8], pl: usize, udp_off: usize, udp_len: usize) {
        let Some(Ok(ip)) = frame.get(pl..).map(Ipv4Packet::new_checked) else {
            return;
        };
        let len16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
        let pseudo = checksum::pseudo_v4(ip.src(), ip.dst(), ipv4::PROTO_UDP, len16);
        put16(frame, udp_off + udp::CHECKSUM_OFFSET, 0);
        let Some(data) = frame.get(udp_off..udp_off + udp_len) else {
            return;
        };
        let check = checksum::udp_wire(checksum::fold(checksum::sum(data, pseudo)));
        put16(frame, udp_off + udp::CHECKSUM_OFFSET, check);
    }

    /// 8. IPv6, ND and DHCPv6.
    fn out_ipv6(&mut self, frame: &mut [u8], c: &Ctx) -> Step {
        let pl = c.l2.payload;
        let ip = Ipv6Packet::new_checked(frame.get(pl..).unwrap_or_default())
            .map_err(|_| DropReason::Malformed)?;
        let (src6, hop) = (ip.src(), ip.hop_limit());
        let mut nd: Option<(usize, usize, u8)> = None;
        let mut claim = None;
        match ip.upper_layer() {
            UpperLayer::Found {
                proto: ipv6::NEXT_ICMPV6,
                offset,
                len,
            } => {
                let start = pl + offset;
                let icmp = frame.get(start..start + len).unwrap_or_default();
                let kind = icmp.first().copied().unwrap_or(0);
                if kind == ndp::RA && !self.config.allow_guest_servers {
                    return Err(DropReason::OutServerRole);
                }
                let code = icmp.get(1).copied();
                if hop == 255 && code == Some(0) && ndp::options_offset(kind).is_some() {
                    match NdMessage::new_checked(icmp) {
                        Ok(m) => {
                            if m.kind() == ndp::NA {
                                claim = m.target();
                            }
                            nd = Some((start, len, m.kind()));
                        }
                        Err(ParseError::ZeroLengthOption) => {
                            return Err(DropReason::NdZeroLenOption)
                        }
                        Err(_) => return Err(DropReason::Malformed),
                    }
                }
            }
            UpperLayer::Found {
                proto: ipv6::NEXT_UDP,
                offset,
                len,
            } => {
                let start = pl + offset;
                if let Some(Ok(u)) = frame.get(start..start + len).map(UdpDatagram::new_checked) {
                    if u.src_port() == DHCP6_SERVER_PORT
                        && u.dst_port() == DHCP6_CLIENT_PORT
                        && !self.config.allow_guest_servers
                    {
                        return Err(DropReason::OutServerRole);
                    }
                }
            }
            _ => {}
        }

        let key = (c.l2.vlan, IpAddr::V6(src6));
        if self.table.is_host(key.1) {
            return Err(DropReason::OutSpoofHostAddr);
        }
        if table::learnable_v6(src6) {
            let source = if nd.is_some() { Source::Nd } else { Source::Ip };
            if self.wire_owned(key, c.now) {
                if self.config.strict_source {
                    return Err(DropReason::OutSpoofWireAddr);
                }
            } else if self.learn_from(key, c, source) == Learn::Conflict
                && self.config.strict_source
            {
                return Err(DropReason::Conflict);
            }
        }
        if let Some(target) = claim {
            let key = (c.l2.vlan, IpAddr::V6(target));
            if self.table.is_host(key.1) {
                return Err(DropReason::OutSpoofHostAddr);
            }
            if self.wire_owned(key, c.now) {
                return Err(DropReason::OutSpoofWireAddr);
            }
            if table::learnable_v6(target) && self.learn_from(key, c, Source::Nd) == Learn::Conflict
            {
                return Err(DropReason::Conflict);
            }
        }
        if let Some((start, len, kind)) = nd {
            if let Some(icmp) = frame.get_mut(start..start + len) {
                self.rewrite_nd_lla(icmp, kind, c.l2.src);
            }
        }
        Ok(())
    }

    /// SLLA (RS, RA, NS) or TLLA (NA, Redirect) options naming a guest
    /// become Mu; the ICMPv6 checksum is patched per changed word.
    fn rewrite_nd_lla(&mut self, icmp: &mut [u8], kind: u8, src: MacAddr) {
        let want = match kind {
            ndp::NA | ndp::REDIRECT => ndp::OPT_TLLA,
            _ => ndp::OPT_SLLA,
        };
        let offsets: Vec<usize> = match NdMessage::new_checked(&icmp[..]) {
            Ok(m) => m
                .options()
                .filter(|o| o.kind == want && o.len == 8)
                .map(|o| o.offset + ndp::LLA_MAC_OFFSET)
                .collect(),
            Err(_) => return,
        };
        for at in offsets {
            let Some(old) = icmp.get(at..at + 6).and_then(MacAddr::from_slice) else {
                continue;
            };
            if !self.names_guest(old, src) {
                continue;
            }
            let check =
                checksum::update_bytes(be16(icmp, ndp::CHECKSUM_OFFSET), &old.0, &self.uplink.0);
            put(icmp, at, &self.uplink.0);
            put16(icmp, ndp::CHECKSUM_OFFSET, check);
            self.counters.bump(Counter::NdLlaRewritten);
        }
    }

    /// 9. Other ethertypes.
    fn out_other(&mut self, ethertype: u16, c: &Ctx) -> Step {
        match self.config.other_ethertypes {
            OtherEthertypes::SingleOwner => {
                let key = if ethertype <= ethernet::MAX_LENGTH_FIELD {
                    ethernet::LLC
                } else {
                    ethertype
                };
                self.table.note_ethertype_owner(key, c.l2.src, c.now);
                Ok(())
            }
            OtherEthertypes::Drop => Err(DropReason::OutUnsupportedEthertype),
        }
    }
}
