//! One error per mistake: the same malformed port, given as a `--port`
//! spec and as a config file's `ports:` entry, is refused with the same
//! message (the file adds its line, column and field in front).

use std::path::Path;
use switchyard_cli::args::{native, port_spec};
use switchyard_cli::config::{self, ConfigError};
use switchyard_cli::ports::{self, SpecError};
use switchyard_cli::settings::Settings;

/// A mistake as a spec and as a YAML entry, and the key the file's error
/// names (as the file spells it).
struct Case {
    what: &'static str,
    spec: &'static str,
    yaml: &'static str,
    field: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "empty name (found by the port_spec fuzz target)",
        spec: "mcast,name=",
        yaml: "{ type: mcast, name: \"\" }",
        field: "name",
    },
    Case {
        what: "VNI out of range",
        spec: "vxlan,vni=99999999,remote=192.0.2.1",
        yaml: "{ type: vxlan, vni: 99999999, remotes: [192.0.2.1] }",
        field: "vni",
    },
    Case {
        what: "unknown key",
        spec: "mcast,colour=red",
        yaml: "{ type: mcast, colour: red }",
        field: "colour",
    },
    Case {
        what: "a key of another type",
        spec: "udp,local=127.0.0.1:1,remote=127.0.0.1:2,vni=4",
        yaml: "{ type: udp, local: \"127.0.0.1:1\", remote: \"127.0.0.1:2\", vni: 4 }",
        field: "vni",
    },
    Case {
        what: "missing required key",
        spec: "udp,local=127.0.0.1:1",
        yaml: "{ type: udp, local: \"127.0.0.1:1\" }",
        field: "remote",
    },
    Case {
        what: "missing repeatable key",
        spec: "vxlan,vni=1",
        yaml: "{ type: vxlan, vni: 1 }",
        field: "remotes",
    },
    Case {
        what: "bad address",
        spec: "udp,local=nowhere,remote=127.0.0.1:1",
        yaml: "{ type: udp, local: nowhere, remote: \"127.0.0.1:1\" }",
        field: "local",
    },
    Case {
        what: "bad remote VTEP",
        spec: "vxlan,vni=1,remote=192.0.2.1,remote=vtep",
        yaml: "{ type: vxlan, vni: 1, remotes: [192.0.2.1, vtep] }",
        field: "remotes",
    },
    Case {
        what: "bad UDP port",
        spec: "vxlan,vni=1,remote=192.0.2.1,port=0",
        yaml: "{ type: vxlan, vni: 1, remotes: [192.0.2.1], port: 0 }",
        field: "port",
    },
    Case {
        what: "bad on/off",
        spec: "vxlan,vni=1,remote=192.0.2.1,strict=maybe",
        yaml: "{ type: vxlan, vni: 1, remotes: [192.0.2.1], strict: maybe }",
        field: "strict",
    },
    Case {
        what: "bad multicast group",
        spec: "mcast,group=239.1.1.1",
        yaml: "{ type: mcast, group: 239.1.1.1 }",
        field: "group",
    },
    Case {
        what: "bad ttl",
        spec: "mcast,ttl=300",
        yaml: "{ type: mcast, ttl: 300 }",
        field: "ttl",
    },
    Case {
        what: "a ttl that is not a number",
        spec: "mcast,ttl=many",
        yaml: "{ type: mcast, ttl: many }",
        field: "ttl",
    },
    Case {
        what: "both stream roles",
        spec: "stream,listen=127.0.0.1:1,connect=127.0.0.1:2",
        yaml: "{ type: stream, listen: \"127.0.0.1:1\", connect: \"127.0.0.1:2\" }",
        field: "listen",
    },
    Case {
        what: "zero MAC-NAT aging",
        spec: "pcap,device=wlan0,mac_nat=on,mac_nat_aging=0",
        yaml: "{ type: pcap, device: wlan0, mac_nat: on, mac_nat_aging: 0 }",
        field: "mac_nat_aging",
    },
    Case {
        what: "bad socket mode (unix builder; the command line gives unix ports with --unix)",
        spec: "unix,path=/tmp/x.ctl,mode=999",
        yaml: "{ type: unix, path: /tmp/x.ctl, mode: 999 }",
        field: "mode",
    },
    Case {
        what: "bad vhost-user mode",
        spec: "vhost-user,path=/tmp/v.sock,mode=listen",
        yaml: "{ type: vhost-user, path: /tmp/v.sock, mode: listen }",
        field: "mode",
    },
    Case {
        what: "vhost-user queues out of range",
        spec: "vhost-user,path=/tmp/v.sock,queues=17",
        yaml: "{ type: vhost-user, path: /tmp/v.sock, queues: 17 }",
        field: "queues",
    },
    Case {
        what: "unknown type",
        spec: "floppy",
        yaml: "{ type: floppy }",
        field: "type",
    },
];

fn base() -> Settings {
    match native::parse(vec!["switchyard".into()]) {
        Ok(s) => s,
        Err(u) => panic!("a bare command line does not parse: {}", u.message),
    }
}

/// The registry's error for `spec`, as `--port` reads it.
fn from_spec(spec: &str) -> SpecError {
    let values = port_spec::values(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    match ports::build(values, 1) {
        Ok(b) => panic!("{spec} was accepted: {b:?}"),
        Err(e) => e,
    }
}

/// The file's error for one entry: (field, message).
fn from_yaml(entry: &str) -> (String, String) {
    let text = format!("ports:\n  - {entry}\n");
    match config::apply(&text, Path::new("same.yaml"), &mut base()) {
        Err(ConfigError::Value { field, message, .. }) => (field, message),
        other => panic!("{entry}: expected a value error, got {other:?}"),
    }
}

#[test]
fn a_mistake_reads_the_same_as_a_flag_and_in_a_file() {
    let mut wrong = Vec::new();
    for c in CASES {
        let flag = from_spec(c.spec);
        let (field, message) = from_yaml(c.yaml);
        if message != flag.message() {
            wrong.push(format!(
                "{}: --port says {:?}, the file says {message:?}",
                c.what,
                flag.message()
            ));
        }
        if !field.starts_with("line 2 column ")
            || !field.ends_with(&format!("ports[0].{}", c.field))
        {
            wrong.push(format!(
                "{}: the file's error is at {field:?}, expected line 2 and ports[0].{}",
                c.what, c.field
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_flag_error_names_the_key_and_keeps_the_words() {
    for (spec, want) in [
        (
            "vxlan,vni=99999999,remote=1.2.3.4",
            "vni: \"99999999\" is not 0 to 16777215",
        ),
        ("mcast,colour=red", "a mcast port has no option \"colour\""),
        ("udp,local=127.0.0.1:1", "a udp port needs remote"),
        ("vxlan,vni=1", "a vxlan port needs at least one remote"),
        (
            "stream,listen=a:1,connect=b:2",
            "needs exactly one of listen or connect",
        ),
        (
            "bogus",
            "unknown port type \"bogus\"; one of unix, tap, udp",
        ),
        ("tap,device=tap0", "use --tap IF"),
        (
            "udp,local=127.0.0.1:1,local=127.0.0.1:2,remote=127.0.0.1:3",
            "\"local\" is given twice",
        ),
    ] {
        let e = port_spec::parse(spec, 1).expect_err(spec);
        assert!(e.contains(want), "{spec}: {e}");
    }
}
