//! BPDU guard and storm control with the Rust protocol client: a port's
//! spanning-tree frames never reach the others, and a broadcast storm is
//! cut to the configured rate while unicast flows on.

use anyhow::{ensure, Result};
use std::time::{Duration, Instant};
use switchyard_tests::proto::{self, Client, BROADCAST};
use switchyard_tests::scenarios::pass_frame;
use switchyard_tests::switch::start_vde_switch;
use switchyard_tests::{preflight, Netns, TempDir};

fn bpdu(src: [u8; 6]) -> Vec<u8> {
    let mut f = proto::frame([0x01, 0x80, 0xc2, 0, 0, 0], src, 60, 7);
    f[12] = 0x00;
    f[13] = 0x26;
    f[14..17].copy_from_slice(&[0x42, 0x42, 0x03]);
    f
}

fn count_arrivals(c: &Client, for_how_long: Duration) -> Result<usize> {
    let end = Instant::now() + for_how_long;
    let mut n = 0;
    while Instant::now() < end {
        if c.recv(Duration::from_millis(50))?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn bpdu_guard_and_storm_control() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("guards")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(
        &ns,
        &tmp,
        "sw",
        &["--bpdu-guard", "--storm-broadcast", "20"],
    )?;
    let scratch = tmp.path().to_path_buf();
    ns.run(move || -> Result<()> {
        let a = Client::attach(&dir, 0, &scratch, proto::mac(0x61))?;
        let b = Client::attach(&dir, 0, &scratch, proto::mac(0x62))?;
        pass_frame(&a, &b, BROADCAST, 64, 1)?;
        pass_frame(&b, &a, a.mac(), 64, 2)?;
        // BPDUs from a are dropped; b hears nothing.
        for _ in 0..5 {
            a.send(&bpdu(a.mac()))?;
        }
        ensure!(
            count_arrivals(&b, Duration::from_millis(300))? == 0,
            "a BPDU got through"
        );
        // 200 broadcasts in a burst: the bucket's burst (8 frames, not a
        // second's allowance) arrives, and little more.
        for i in 0..200u32 {
            a.send(&proto::frame(BROADCAST, a.mac(), 64, (i % 250) as u8))?;
        }
        let got = count_arrivals(&b, Duration::from_millis(500))?;
        ensure!(
            (6..=12).contains(&got),
            "{got} of 200 broadcasts passed a 20/s limit with bursts of 8"
        );
        // Known unicast is not limited.
        for i in 0..50u8 {
            a.send(&proto::frame(b.mac(), a.mac(), 64, i))?;
        }
        let uni = count_arrivals(&b, Duration::from_millis(500))?;
        ensure!(uni == 50, "{uni} of 50 unicast frames arrived");
        Ok(())
    })??;
    sw.assert_running()?;
    Ok(())
}

/// A static MAC entry pins a guest's address to its port: another port
/// sending from that MAC is dropped, and frames to it reach only its port.
#[test]
fn static_mac_cannot_be_spoofed() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("static")?;
    let ns = Netns::new()?;
    let owner = proto::mac(0x71);
    let pin = format!("{}@unix:1", switchyard_tests::scenarios::mac_string(owner));
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--static-mac", &pin])?;
    let scratch = tmp.path().to_path_buf();
    ns.run(move || -> Result<()> {
        let a = Client::attach(&dir, 0, &scratch, owner)?; // unix:1
        let b = Client::attach(&dir, 0, &scratch, proto::mac(0x72))?; // unix:2
        let c = Client::attach(&dir, 0, &scratch, proto::mac(0x73))?; // unix:3
                                                                      // b claims a's MAC: nobody hears it.
        b.send(&proto::frame(BROADCAST, owner, 64, 1))?;
        ensure!(
            count_arrivals(&c, Duration::from_millis(300))? == 0,
            "a spoofed frame got through"
        );
        // Frames to a's MAC still go to a only.
        c.send(&proto::frame(owner, c.mac(), 64, 2))?;
        ensure!(
            count_arrivals(&a, Duration::from_millis(300))? == 1,
            "a did not get its frame"
        );
        ensure!(
            count_arrivals(&b, Duration::from_millis(100))? == 0,
            "b got a's frame"
        );
        pass_frame(&a, &c, BROADCAST, 64, 3)?;
        Ok(())
    })??;
    sw.assert_running()?;
    Ok(())
}
