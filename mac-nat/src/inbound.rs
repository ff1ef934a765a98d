//! Uplink → guests (§3.3): drop echoes, snoop LAN claims, map frames for Mu
//! back to the guest that owns the destination address.

use crate::config::{DhcpMode, OtherEthertypes};
use crate::counters::Counter;
use crate::nat::{Inbound, MacNat};
use crate::table::{self, Learn, Source};
use crate::{DropReason, MacAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use switchyard_wire::arp::{self, ArpPacket};
use switchyard_wire::checksum;
use switchyard_wire::dhcp4::{self, DhcpMessage};
use switchyard_wire::ethernet::{self, EthernetFrame, Layout};
use switchyard_wire::ipv4::{self, Ipv4Packet};
use switchyard_wire::ipv6::{self, Ipv6Packet, UpperLayer};
use switchyard_wire::ndp::{self, NdMessage};
use switchyard_wire::udp::{self, UdpDatagram};
use switchyard_wire::ParseError;

/// What one inbound frame is, for the protocol steps.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    l2: Layout,
    group: bool,
    now: Duration,
}

/// 01:00:5e + the low 23 bits of an IPv4 multicast group (RFC 1112).
fn ipv4_group_mac(a: Ipv4Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// 33:33 + the low 32 bits of an IPv6 multicast group (RFC 2464).
fn ipv6_group_mac(a: Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The solicited-node group MAC of an address: 33:33:ff + its low 24 bits.
fn solicited_node_mac(a: Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

impl MacNat {
    /// Processes a frame captured on the uplink (received, not sent by this
    /// host), editing it in place. `ToGuest` has already set the destination
    /// MAC (and, for ARP, the target hardware address; for impersonated DHCP,
    /// `chaddr`) to the guest's. Never panics; every decision is counted.
    pub fn inbound(&mut self, frame: &mut [u8], now: Duration) -> Inbound {
        let verdict = self.inbound_steps(frame, now);
        let counter = match verdict {
            Inbound::ToGuest(_) => Counter::InToGuest,
            Inbound::Flood => Counter::InFlood,
            Inbound::HostOnly => Counter::InHostOnly,
            Inbound::Drop(r) => r.counter(),
        };
        self.counters.bump(counter);
        verdict
    }

    fn inbound_steps(&mut self, frame: &mut [u8], now: Duration) -> Inbound {
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            return Inbound::Drop(DropReason::Malformed);
        };
        let (dst, src) = (eth.destination(), eth.source());
        // 1. echo of our own (or the host's) transmission
        if src == self.uplink {
            return Inbound::Drop(DropReason::InEcho);
        }
        // 2. reserved groups
        if dst.is_reserved_group() {
            return Inbound::Drop(DropReason::InReservedGroup);
        }
        let Ok(l2) = eth.layout() else {
            return Inbound::Drop(DropReason::Malformed);
        };
        // 3. Wi-Fi control frames are the host's
        if matches!(
            l2.ethertype,
            ethernet::EAPOL | ethernet::RSN_PREAUTH | ethernet::TDLS
        ) {
            return Inbound::HostOnly;
        }
        let group = dst.is_multicast();
        // 5. unicast for someone else
        if !group && dst != self.uplink {
            return Inbound::Drop(DropReason::InNotForUplink);
        }
        let c = Ctx { l2, group, now };
        match l2.ethertype {
            ethernet::ARP => self.in_arp(frame, &c),
            ethernet::IPV4 => self.in_ipv4(frame, &c),
            ethernet::IPV6 => self.in_ipv6(frame, &c),
            _ if group => Inbound::Flood,
            other => self.in_other(frame, other),
        }
    }

    fn to_guest(frame: &mut [u8], guest: MacAddr) -> Inbound {
        ethernet::set_dst(frame, guest);
        Inbound::ToGuest(guest)
    }

    fn regroup(&mut self, frame: &mut [u8], mac: MacAddr, counter: Counter) -> Inbound {
        ethernet::set_dst(frame, mac);
        self.counters.bump(counter);
        Inbound::Flood
    }

    fn not_parsed(&mut self, c: &Ctx) -> Inbound {
        self.counters.bump(Counter::Malformed);
        if c.group {
            Inbound::Flood
        } else {
            Inbound::HostOnly
        }
    }

    /// A LAN host (MAC ≠ Mu) claims `addr`: purge a guest binding (ARP and
    /// overriding NA) and remember the claim.
    fn wire_claim(&mut self, key: (u16, IpAddr), mac: MacAddr, purge: bool, now: Duration) {
        if mac.is_multicast() || mac == self.uplink || !table::learnable(key.1) {
            return;
        }
        if self.table.owner(key.0, key.1).is_some() {
            if !purge {
                return;
            }
            self.table.remove_entry(key);
            self.counters.bump(Counter::PurgedByWire);
        }
        self.table.note_wire(key, mac, now, self.config.limits.wire);
    }

    /// An on-link LAN host sends from `addr` (not an address a guest holds):
    /// remember it as wire-owned so that guests cannot claim it later.
    fn wire_source(&mut self, key: (u16, IpAddr), mac: MacAddr, now: Duration) {
        if table::learnable(key.1)
            && !self.table.is_host(key.1)
            && self.table.is_on_link(key.1)
            && self.table.owner(key.0, key.1).is_none()
        {
            self.wire_claim(key, mac, false, now);
        }
    }

    /// 7. ARP (and the step-4 snoop of group-addressed ARP).
    fn in_arp(&mut self, frame: &mut [u8], c: &Ctx) -> Inbound {
        let Some(Ok(a)) = frame.get(c.l2.payload..).map(ArpPacket::new_checked) else {
            return if c.group {
                Inbound::Flood
            } else {
                Inbound::HostOnly
            };
        };
        let (op, sha, spa, tha, tpa) = (a.op(), a.sha(), a.spa(), a.tha(), a.tpa());
        if !spa.is_unspecified() {
            self.wire_claim((c.l2.vlan, IpAddr::V4(spa)), sha, true, c.now);
        }
        if c.group {
            return Inbound::Flood;
        }
        if let Some(g) = self.table.owner(c.l2.vlan, IpAddr::V4(tpa)) {
            if tha == self.uplink {
                if let Some(Ok(mut a)) = frame.get_mut(c.l2.payload..).map(ArpPacket::new_checked) {
                    a.set_tha(g);
                }
            }
            return Self::to_guest(frame, g);
        }
        if self.table.is_host(IpAddr::V4(tpa)) {
            return Inbound::HostOnly;
        }
        if op == arp::OP_REQUEST {
            return self.regroup(frame, MacAddr::BROADCAST, Counter::InArpFloodUnknown);
        }
        Inbound::HostOnly
    }

    /// 8. IPv4 (and 6. DHCP server messages).
    fn in_ipv4(&mut self, frame: &mut [u8], c: &Ctx) -> Inbound {
        let pl = c.l2.payload;
        let Some(Ok(ip)) = frame.get(pl..).map(Ipv4Packet::new_checked) else {
            return self.not_parsed(c);
        };
        let (src_ip, dst_ip) = (ip.src(), ip.dst());
        let (hl, total) = (ip.header_len(), ip.total_len());
        let dhcp_candidate = !ip.is_fragment() && ip.protocol() == ipv4::PROTO_UDP;
        self.wire_source((c.l2.vlan, IpAddr::V4(src_ip)), c.l2.src, c.now);
        if dhcp_candidate {
            if let Some(v) = self.in_dhcp(frame, c, pl + hl, pl + total) {
                return v;
            }
        }
        if c.group {
            return Inbound::Flood;
        }
        if dst_ip.is_broadcast() || self.table.is_directed_broadcast(dst_ip) {
            return self.regroup(frame, MacAddr::BROADCAST, Counter::InL2ucL3bc);
        }
        if dst_ip.is_multicast() {
            return self.regroup(frame, ipv4_group_mac(dst_ip), Counter::InL2ucL3bc);
        }
        if let Some(g) = self.table.owner(c.l2.vlan, IpAddr::V4(dst_ip)) {
            return Self::to_guest(frame, g);
        }
        if !self.table.is_host(IpAddr::V4(dst_ip)) {
            self.counters.bump(Counter::InUnknownL3);
        }
        Inbound::HostOnly
    }

    /// Step 6: a DHCP server message (UDP 67 → 68, op 2); `None` when the
    /// datagram is not one.
    fn in_dhcp(
        &mut self,
        frame: &mut [u8],
        c: &Ctx,
        udp_off: usize,
        ip_end: usize,
    ) -> Option<Inbound> {
        let u = frame
            .get(udp_off..ip_end)
            .map(UdpDatagram::new_checked)?
            .ok()?;
        if (u.src_port(), u.dst_port()) != (dhcp4::SERVER_PORT, dhcp4::CLIENT_PORT) {
            return None;
        }
        let (udp_len, csum) = (u.length(), u.checksum());
        let body = udp_off + udp::HEADER_LEN..udp_off + udp_len;
        let m = frame
            .get(body.clone())
            .map(DhcpMessage::new_checked)?
            .ok()?;
        if m.op() != dhcp4::OP_REPLY {
            return None;
        }
        let (xid, chaddr, mtype) = (m.xid(), m.chaddr(), m.message_type());
        let (yiaddr, ciaddr) = (m.yiaddr(), m.ciaddr());

        let mut guest: Option<(MacAddr, u32)> = None;
        if self.config.dhcp == DhcpMode::Impersonate && chaddr == self.uplink {
            if let Some(t) = self.table.xid(xid, c.now, self.config.dhcp_xid_timeout) {
                if let Some(Ok(mut m)) = frame.get_mut(body.clone()).map(DhcpMessage::new_checked) {
                    m.set_chaddr(t.chaddr);
                }
                if csum != 0 {
                    let check = checksum::udp_wire(checksum::update_bytes(
                        csum,
                        &self.uplink.0,
                        &t.chaddr.0,
                    ));
                    if let Some(Ok(mut u)) =
                        frame.get_mut(udp_off..ip_end).map(UdpDatagram::new_checked)
                    {
                        u.set_checksum(check);
                    }
                }
                // Several servers may OFFER; keep the transaction until it ends.
                if matches!(mtype, Some(dhcp4::ACK | dhcp4::NAK)) {
                    self.table.remove_xid(xid);
                }
                self.counters.bump(Counter::DhcpChaddrRestored);
                guest = Some((t.guest, t.port));
            }
        }
        if guest.is_none() && chaddr != self.uplink {
            guest = self.table.guest_port(chaddr).map(|p| (chaddr, p));
        }
        Some(match guest {
            Some((g, port)) => {
                if mtype == Some(dhcp4::ACK) {
                    self.bind_ack(c, g, port, yiaddr, ciaddr);
                }
                if c.group {
                    Inbound::Flood
                } else {
                    Self::to_guest(frame, g)
                }
            }
            None if chaddr == self.uplink => Inbound::HostOnly,
            None if c.group => Inbound::Flood,
            None => Inbound::HostOnly,
        })
    }

    /// DHCPACK: bind `yiaddr` to the guest authoritatively; drop the guest's
    /// old `ciaddr` binding when it differs.
    fn bind_ack(&mut self, c: &Ctx, guest: MacAddr, port: u32, yiaddr: Ipv4Addr, ciaddr: Ipv4Addr) {
        let vlan = c.l2.vlan;
        if table::learnable_v4(yiaddr) && !self.table.is_host(IpAddr::V4(yiaddr)) {
            let key = (vlan, IpAddr::V4(yiaddr));
            self.table.forget_wire(key);
            let learned = self.table.learn(
                key,
                guest,
                port,
                Source::Dhcp,
                c.now,
                true,
                &self.config,
                &mut self.counters,
            );
            if matches!(learned, Learn::New | Learn::Refreshed) {
                self.counters.bump(Counter::DhcpAckBind);
            }
        }
        if !ciaddr.is_unspecified() && ciaddr != yiaddr {
            let key = (vlan, IpAddr::V4(ciaddr));
            if self.table.owner(vlan, key.1) == Some(guest) {
                self.table.remove_entry(key);
            }
        }
    }

    /// 9. IPv6 (and the step-4 snoop of NAs).
    fn in_ipv6(&mut self, frame: &mut [u8], c: &Ctx) -> Inbound {
        let pl = c.l2.payload;
        let Some(Ok(ip)) = frame.get(pl..).map(Ipv6Packet::new_checked) else {
            return self.not_parsed(c);
        };
        let (src6, dst6, hop) = (ip.src(), ip.dst(), ip.hop_limit());
        let mut ns_target = None;
        let mut na: Option<(Ipv6Addr, u8)> = None;
        if let UpperLayer::Found {
            proto: ipv6::NEXT_ICMPV6,
            offset,
            len,
        } = ip.upper_layer()
        {
            let icmp = frame
                .get(pl + offset..pl + offset + len)
                .unwrap_or_default();
            let kind = icmp.first().copied().unwrap_or(0);
            if hop == 255 && icmp.get(1) == Some(&0) && matches!(kind, ndp::NS | ndp::NA) {
                match NdMessage::new_checked(icmp) {
                    Ok(m) if m.kind() == ndp::NS => ns_target = m.target(),
                    Ok(m) => na = m.target().map(|t| (t, m.flags())),
                    Err(ParseError::ZeroLengthOption) => {
                        self.counters.bump(Counter::NdZeroLenOption)
                    }
                    Err(_) => self.counters.bump(Counter::Malformed),
                }
            }
        }
        if let Some((target, flags)) = na {
            let purge = flags & ndp::NA_OVERRIDE != 0 || flags & ndp::NA_SOLICITED == 0;
            self.wire_claim((c.l2.vlan, IpAddr::V6(target)), c.l2.src, purge, c.now);
        }
        self.wire_source((c.l2.vlan, IpAddr::V6(src6)), c.l2.src, c.now);
        if c.group {
            return Inbound::Flood;
        }
        if dst6.is_multicast() {
            return self.regroup(frame, ipv6_group_mac(dst6), Counter::InL2ucL3bc);
        }
        if let Some(target) = ns_target {
            let owner = self
                .table
                .owner(c.l2.vlan, IpAddr::V6(target))
                .or_else(|| self.table.owner(c.l2.vlan, IpAddr::V6(dst6)));
            if let Some(g) = owner {
                return Self::to_guest(frame, g);
            }
            if self.table.is_host(IpAddr::V6(target)) {
                return Inbound::HostOnly;
            }
            return self.regroup(frame, solicited_node_mac(target), Counter::InNsFloodUnknown);
        }
        if let Some(g) = self.table.owner(c.l2.vlan, IpAddr::V6(dst6)) {
            return Self::to_guest(frame, g);
        }
        if !self.table.is_host(IpAddr::V6(dst6)) {
            self.counters.bump(Counter::InUnknownL3);
        }
        Inbound::HostOnly
    }

    /// 10. Other ethertypes, unicast to Mu.
    fn in_other(&mut self, frame: &mut [u8], ethertype: u16) -> Inbound {
        if self.config.other_ethertypes == OtherEthertypes::SingleOwner {
            let key = if ethertype <= ethernet::MAX_LENGTH_FIELD {
                ethernet::LLC
            } else {
                ethertype
            };
            if let Some(g) = self.table.ethertype_owner(key) {
                return Self::to_guest(frame, g);
            }
        }
        Inbound::HostOnly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_macs() {
        assert_eq!(
            ipv4_group_mac(Ipv4Addr::new(239, 255, 255, 250)),
            MacAddr([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa])
        );
        assert_eq!(
            ipv6_group_mac("ff02::1:ff00:101".parse().unwrap()),
            MacAddr([0x33, 0x33, 0xff, 0x00, 0x01, 0x01])
        );
        assert_eq!(
            solicited_node_mac("2001:db8::12:3456".parse().unwrap()),
            MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
    }
}
