//! End-to-end test machinery for switchyard.
//!
//! The tests in `tests/tests/` start the real daemon and real clients (User-mode
//! Linux guests, `vde_plug`, QEMU, and the small protocol client in [`proto`])
//! inside network namespaces they create, and clean everything up through
//! guards whose `Drop` runs even when a test panics:
//!
//! * [`util::TempDir`]: sockets, logs, UML state; removed on drop.
//! * [`netns::Netns`]: a fresh network namespace; deleted on drop.
//! * [`process::Proc`]: a child in its own process group; the group is
//!   SIGKILLed and the child reaped on drop (UML helpers included).
//! * [`switch::Switch`], [`uml::Guest`], [`qemu::RunningQemu`]: wrappers
//!   around a `Proc`.
//!
//! Declare guards in the order temp dir, namespaces, switch, clients: Rust
//! drops locals in reverse order, so clients die first.
//!
//! Requirements: root, and the Debian packages user-mode-linux, uml-utilities,
//! vde2, vdeplug, qemu-system-x86, iproute2, iputils-ping; for the QEMU
//! guests of [`qemu`] also linux-image-amd64, busybox-static, cpio and
//! iperf3 (tests/run.sh installs them all). A missing piece
//! makes the tests fail, never skip. The daemon is looked up next to the test
//! executable (`target/<profile>/switchyard`); build it first.
//!
//! Environment knobs: `SWITCHYARD_BIN` (daemon path), `SWITCHYARD_TESTS_KEEP=1`
//! (keep temp dirs), `SWITCHYARD_TESTS_VERBOSE=1` (stream child output),
//! `SWITCHYARD_TESTS_REFERENCE=1` (compatibility tests run the original
//! uml_switch/vde_switch, to validate the tests themselves),
//! `SWITCHYARD_QEMU_ACCEL=tcg|kvm` (QEMU guests' accelerator without the
//! probe in [`qemu::Accel::probe`]).

pub mod ap;
pub mod battery;
pub mod netns;
pub mod ops;
pub mod process;
pub mod proto;
pub mod qemu;
pub mod raw;
pub mod scenarios;
pub mod switch;
pub mod tools;
pub mod transports;
pub mod uml;
pub mod util;
pub mod vhost_frontend;
pub mod vhost_user;

pub use netns::Netns;
pub use process::{Proc, Stdin};
pub use switch::{Switch, SwitchCmd};
pub use uml::{Guest, Uml};
pub use util::{require_root, unique_name, wait_until, TempDir};

/// Common preconditions for every end-to-end test: root and the basic tools.
pub fn preflight() -> anyhow::Result<()> {
    util::require_root()?;
    util::require_tool("ip")?;
    Ok(())
}
