//! Configuration of one MAC-NAT instance (§3.9 of the reference).

use crate::MacAddr;
use std::time::Duration;

/// How DHCPv4 client messages from guests are made answerable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DhcpMode {
    /// Set the BOOTP broadcast flag (default): the server broadcasts its
    /// replies, `chaddr` and the client identifier stay the guest's own.
    #[default]
    BroadcastFlag,
    /// Replace `chaddr` with the uplink MAC, add a client identifier (option
    /// 61) naming the guest, and restore `chaddr` on replies by `xid`. For
    /// networks that check `chaddr` against the frame source.
    Impersonate,
}

/// Who keeps an address two guests claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConflictPolicy {
    /// The current owner keeps it; the claimant's ARP/NA claims are dropped
    /// (default).
    #[default]
    KeepFirst,
    /// The latest claimant wins (NAT25/arpnat/relayd behaviour).
    LastWins,
}

/// What happens to ethertypes other than ARP, IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OtherEthertypes {
    /// Drop them outbound (`out_unsupported_ethertype`); inbound unicast
    /// goes to the host only (default).
    #[default]
    Drop,
    /// Send them with the source rewritten and remember the last guest per
    /// ethertype; inbound unicast of that ethertype goes to that guest.
    SingleOwner,
}

/// Table limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// IPv4 entries one guest may hold (default 8); over it, its least
    /// recently used entry is evicted.
    pub per_guest_v4: usize,
    /// IPv6 entries one guest may hold (default 32).
    pub per_guest_v6: usize,
    /// Entries in the whole table (default 4096); over it, new entries are
    /// refused.
    pub total: usize,
    /// Guest MACs remembered (default 1024).
    pub guests: usize,
    /// Wire-owned addresses remembered (default 4096; the oldest is
    /// replaced when full).
    pub wire: usize,
    /// DHCP transactions remembered in impersonate mode (default 256; the
    /// oldest is replaced when full).
    pub xids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_guest_v4: 8,
            per_guest_v6: 32,
            total: 4096,
            guests: 1024,
            wire: 4096,
            xids: 256,
        }
    }
}

/// Configuration of a [`MacNat`](crate::MacNat).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MacNatConfig {
    /// DHCPv4 handling (default [`DhcpMode::BroadcastFlag`]).
    pub dhcp: DhcpMode,
    /// Entries not refreshed by outbound traffic for this long are removed
    /// by `sweep` (default 600 s).
    pub aging: Duration,
    /// A guest may take over another guest's address once the owner's entry
    /// has been idle longer than this (default 60 s).
    pub takeover_idle: Duration,
    /// Conflicts between guests (default [`ConflictPolicy::KeepFirst`]).
    pub conflict: ConflictPolicy,
    /// Table limits.
    pub limits: Limits,
    /// Other ethertypes (default [`OtherEthertypes::Drop`]).
    pub other_ethertypes: OtherEthertypes,
    /// Let guests send DHCP/DHCPv6 server replies and router advertisements
    /// (default false).
    pub allow_guest_servers: bool,
    /// Drop guest data packets whose source is wire-owned or held by another
    /// guest, instead of forwarding them without learning (default false).
    pub strict_source: bool,
    /// The uplink's IP MTU (default 1500): an edit that would make an IPv4
    /// packet larger is refused (`dhcp_no_room`).
    pub mtu: usize,
    /// How long a LAN host's claim on an address is remembered (default 300 s).
    pub wire_aging: Duration,
    /// How long an impersonated DHCP transaction is remembered (default 60 s).
    pub dhcp_xid_timeout: Duration,
}

impl Default for MacNatConfig {
    fn default() -> Self {
        MacNatConfig {
            dhcp: DhcpMode::default(),
            aging: Duration::from_secs(600),
            takeover_idle: Duration::from_secs(60),
            conflict: ConflictPolicy::default(),
            limits: Limits::default(),
            other_ethertypes: OtherEthertypes::default(),
            allow_guest_servers: false,
            strict_source: false,
            mtu: 1500,
            wire_aging: Duration::from_secs(300),
            dhcp_xid_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a configuration or uplink MAC is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The uplink MAC is zero or a group address.
    #[error("uplink MAC {0} is not a station address; mac_nat needs the Wi-Fi interface's own unicast MAC")]
    BadUplinkMac(MacAddr),
    /// A timer is zero.
    #[error("mac_nat {0} must be longer than 0 s")]
    ZeroTimer(&'static str),
    /// A limit is zero.
    #[error("mac_nat limits.{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// The MTU cannot carry a DHCP message.
    #[error("mac_nat mtu {0} is below the IPv4 minimum of 576")]
    MtuTooSmall(usize),
}

impl MacNatConfig {
    /// Checks timers and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("aging", self.aging),
            ("wire_aging", self.wire_aging),
            ("dhcp_xid_timeout", self.dhcp_xid_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroTimer(name));
            }
        }
        let l = &self.limits;
        for (name, v) in [
            ("per_guest_v4", l.per_guest_v4),
            ("per_guest_v6", l.per_guest_v6),
            ("total", l.total),
            ("guests", l.guests),
            ("wire", l.wire),
            ("xids", l.xids),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        if self.mtu < 576 {
            return Err(ConfigError::MtuTooSmall(self.mtu));
        }
        Ok(())
    }
}
