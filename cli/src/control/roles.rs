//! Who may do what on the control socket, decided per request from the
//! kernel's credentials of the caller (`SO_PEERCRED`, `SO_PEERGROUPS`):
//!
//! - an *admin* (root, the daemon's own user, or a member of the
//!   configured admin group) may do everything;
//! - an *observer* (anyone else who can open the socket) may read every
//!   listing, and capture or remove only ports whose client runs as the
//!   caller's uid.
//!
//! Opening the socket is the file mode's business; this module decides
//! what an open connection may ask.

use crate::protocol::{CommandName, Request};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use switchyard_switch::{Port, Switch};

/// The process that sent a request, as the kernel saw it connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its process id, when the kernel knows it.
    pub pid: Option<i32>,
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its supplementary groups (empty where `SO_PEERGROUPS` is missing:
    /// Linux before 4.13).
    pub groups: Vec<u32>,
}

impl Caller {
    /// The credentials of the peer of `stream`. A peer whose credentials
    /// cannot be read counts as an unknown user with no groups.
    pub fn of(stream: &tokio::net::UnixStream) -> Caller {
        let cred = stream.peer_cred().ok();
        let groups = match crate::sys::peer_groups(stream.as_fd()) {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!("control client: no supplementary groups (SO_PEERGROUPS): {e}");
                Vec::new()
            }
        };
        Caller {
            pid: cred.as_ref().and_then(|c| c.pid()),
            // u32::MAX is no one's uid (setuid(-1) means "unchanged").
            uid: cred.as_ref().map(|c| c.uid()).unwrap_or(u32::MAX),
            gid: cred.as_ref().map(|c| c.gid()).unwrap_or(u32::MAX),
            groups,
        }
    }

    /// Whether `gid` is its primary or one of its supplementary groups.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read everything; capture and remove only its own guests' ports.
    Observer,
}

/// No admin group, in [`Roles::admin_group`]'s atomic.
const NO_GROUP: u64 = u64::MAX;

/// One switch's role settings and refusal counters (kept per switch, in
/// [`Switch::shared`], so the control socket's tasks need nothing else).
#[derive(Debug)]
pub struct Roles {
    /// The admin group's gid, or [`NO_GROUP`]; swapped on reload.
    admin_group: AtomicU64,
    /// Requests refused, by [`CommandName::index`].
    refused: [AtomicU64; CommandName::ALL.len()],
}

impl Default for Roles {
    fn default() -> Roles {
        Roles {
            admin_group: AtomicU64::new(NO_GROUP),
            refused: Default::default(),
        }
    }
}

impl Roles {
    /// `switch`'s roles.
    pub fn of(switch: &Switch) -> Arc<Roles> {
        switch.shared::<Roles>()
    }

    /// Sets the admin group (`control.admin_group`, `--admin-group`).
    pub fn set_admin_group(&self, gid: Option<u32>) {
        let v = gid.map(u64::from).unwrap_or(NO_GROUP);
        self.admin_group.store(v, Ordering::Relaxed);
    }

    /// The admin group, if one is configured.
    pub fn admin_group(&self) -> Option<u32> {
        u32::try_from(self.admin_group.load(Ordering::Relaxed)).ok()
    }

    /// The role of `caller` now. The guests' group (`--group`) plays no
    /// part: being allowed to plug a guest in is not being allowed to
    /// reach the host.
    pub fn role(&self, caller: &Caller) -> Role {
        let me = nix::unistd::geteuid().as_raw();
        let admin = caller.uid == 0
            || caller.uid == me
            || self.admin_group().is_some_and(|g| caller.in_group(g));
        if admin {
            Role::Admin
        } else {
            Role::Observer
        }
    }

    /// Requests refused so far, by command (zeros included).
    pub fn refused(&self) -> Vec<(CommandName, u64)> {
        CommandName::ALL
            .iter()
            .map(|c| (*c, self.refused[c.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts and logs a refusal of `cmd` to `caller`, returning the
    /// reply's message.
    pub fn refuse(&self, cmd: CommandName, caller: &Caller, message: String) -> String {
        self.refused[cmd.index()].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            request = cmd.label(),
            pid = caller.pid.unwrap_or(0),
            uid = caller.uid,
            "control request refused: {message}"
        );
        message
    }

    /// How to become an admin, for a refusal's message.
    fn how_to_be_admin(&self) -> String {
        let me = nix::unistd::geteuid().as_raw();
        let users = if me == 0 {
            "root".to_string()
        } else {
            format!("root or uid {me}, which runs the daemon")
        };
        match self.admin_group() {
            Some(g) => format!("{users}, or a member of the admin group {g}"),
            None => format!(
                "{users}; no admin group is configured (control.admin_group or --admin-group)"
            ),
        }
    }

    /// Refuses `req` unless `caller` may send it. `port` is the live port
    /// the request names (`capture`, `port del`), looked up by the caller
    /// so that what is checked is what gets used. Err: the refusal's
    /// message (not yet counted: see [`Roles::refuse`]); Ok: the role
    /// the request was allowed under.
    pub fn permit(
        &self,
        caller: &Caller,
        req: &Request,
        port: Option<&Port>,
    ) -> Result<Role, String> {
        if self.role(caller) == Role::Admin {
            return Ok(Role::Admin);
        }
        let words = req.name().words();
        let you = format!("you are uid {}, an observer", caller.uid);
        match req {
            Request::Ports | Request::Fdb | Request::Stats | Request::Macnat => Ok(Role::Observer),
            Request::Capture { port: name } | Request::PortDel { name } => {
                let owner = port.and_then(|p| p.client()).map(|c| c.uid);
                // u32::MAX stands for "credentials unknown" on both sides:
                // two unknowns are not one user.
                if owner == Some(caller.uid) && caller.uid != u32::MAX {
                    return Ok(Role::Observer);
                }
                let whose = match (port, owner) {
                    (None, _) => format!("no client's port is named {name:?}"),
                    (Some(_), Some(uid)) => format!("{name}'s client is uid {uid}"),
                    (Some(_), None) => {
                        format!("{name} has no client user (only unix-socket guests have one)")
                    }
                };
                Err(format!(
                    "permission denied: `{words} {name}` needs the admin role ({}) or to be \
                     the port's client; {whose}; {you}",
                    self.how_to_be_admin()
                ))
            }
            Request::FdbFlush { .. } | Request::PortAdd { .. } | Request::Reload => Err(format!(
                "permission denied: `{words}` needs the admin role ({}); {you}",
                self.how_to_be_admin()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_switch::ports::attachment::{Attachment, Client};
    use switchyard_switch::{EngineConfig, PortId, SendError, Stop, Transmit};

    /// A port that sends nowhere.
    struct Nowhere;

    impl Transmit for Nowhere {
        fn transmit(&self, _: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
            (frames.len(), None)
        }
    }

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            pid: Some(1234),
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn every_request() -> Vec<Request> {
        vec![
            Request::Ports,
            Request::Fdb,
            Request::Stats,
            Request::Macnat,
            Request::FdbFlush { port: None },
            Request::PortAdd {
                spec: "pcap,device=eth0".into(),
            },
            Request::PortDel { name: "p".into() },
            Request::Reload,
            Request::Capture { port: "p".into() },
        ]
    }

    /// A fake uid no test runner has.
    const OTHER: u32 = 4_000_000;

    #[test]
    fn root_the_daemons_user_and_the_admin_group_are_admins() {
        let roles = Roles::default();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(roles.role(&caller(0, 0, &[])), Role::Admin);
        assert_eq!(roles.role(&caller(me, 5, &[])), Role::Admin);
        assert_eq!(roles.role(&caller(OTHER, 100, &[200])), Role::Observer);
        roles.set_admin_group(Some(200));
        assert_eq!(roles.role(&caller(OTHER, 100, &[200])), Role::Admin);
        assert_eq!(roles.role(&caller(OTHER, 200, &[])), Role::Admin);
        assert_eq!(roles.role(&caller(OTHER, 100, &[300])), Role::Observer);
        roles.set_admin_group(None);
        assert_eq!(roles.role(&caller(OTHER, 200, &[])), Role::Observer);
        for req in every_request() {
            assert_eq!(
                roles.permit(&caller(0, 0, &[]), &req, None),
                Ok(Role::Admin)
            );
        }
    }

    #[test]
    fn observers_read_and_touch_only_their_own_ports() {
        let roles = Roles::default();
        let observer = caller(OTHER, 100, &[]);
        let switch = Switch::new(EngineConfig::default());
        let stop = Stop::new();
        let port = |id, uid: Option<u32>| {
            let p = Arc::new(Port::new(
                PortId(id),
                format!("unix:{id}"),
                "unix",
                "x",
                Box::new(Nowhere),
            ));
            let client = uid.map(|uid| Client { pid: 1, uid });
            Attachment::new(&switch, &stop, p, client)
        };
        let (own, other, none) = (port(1, Some(OTHER)), port(2, Some(0)), port(3, None));
        for req in every_request() {
            let got = roles.permit(&observer, &req, None);
            let reading = matches!(
                req,
                Request::Ports | Request::Fdb | Request::Stats | Request::Macnat
            );
            assert_eq!(got.is_ok(), reading, "{req:?}: {got:?}");
            if let Err(m) = got {
                assert!(
                    m.starts_with("permission denied: `")
                        && m.contains("needs the admin role")
                        && m.contains(&format!("you are uid {OTHER}, an observer"))
                        && m.contains("no admin group is configured"),
                    "{m}"
                );
            }
        }
        for make in [
            |n: &str| Request::Capture { port: n.into() },
            |n: &str| Request::PortDel { name: n.into() },
        ] {
            let ask = |a: &Attachment| {
                let p = a.port();
                roles.permit(&observer, &make(p.name()), Some(p))
            };
            assert_eq!(ask(&own), Ok(Role::Observer));
            let e = ask(&other).expect_err("another uid's port");
            assert!(e.contains("unix:2's client is uid 0"), "{e}");
            let e = ask(&none).expect_err("a port with no client");
            assert!(e.contains("has no client user"), "{e}");
        }
        let m = roles.refuse(CommandName::Reload, &observer, "no".into());
        assert_eq!(m, "no");
        let refused = roles.refused();
        assert_eq!(
            refused[CommandName::Reload.index()],
            (CommandName::Reload, 1)
        );
        assert_eq!(refused.iter().map(|(_, n)| n).sum::<u64>(), 1);
    }
}
