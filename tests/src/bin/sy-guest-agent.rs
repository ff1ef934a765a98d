//! The guest side of the MAC-NAT access-point tests (tests/tests/macnat_ap.rs):
//! run inside each guest (a namespace, or a UML guest booted from the host's
//! filesystem), it gets DHCPv4, SLAAC and DHCPv6 addresses and reaches the
//! LAN host from each. Not useful on its own.

fn main() -> std::process::ExitCode {
    if std::env::var_os("SY_AGENT").is_none() {
        eprintln!("sy-guest-agent runs inside a guest, started by the MAC-NAT tests");
        return std::process::ExitCode::from(2);
    }
    match switchyard_tests::ap::agent_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("SY_AGENT_RESULT=FAIL {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
