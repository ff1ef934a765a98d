//! The engine alone: decisions per second on one core, for a learned
//! unicast pair and with 64 k learned addresses.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use switchyard_engine::PortId;
use switchyard_engine::{Engine, EngineConfig, FdbConfig, Mode};

fn frame(dst: [u8; 6], src: [u8; 6]) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x08;
    f
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [2, 0, b[0], b[1], b[2], b[3]]
}

fn engine(macs: u32) -> Engine {
    let mut e = Engine::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
    for p in 1..=4 {
        e.add_port(PortId(p));
    }
    for i in 0..macs {
        e.decide(PortId(1 + i % 4), &frame([0xff; 6], mac(i)), Duration::ZERO);
    }
    e
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let mut e = engine(2);
    let f = frame(mac(1), mac(0));
    let now = Duration::from_secs(1);
    g.bench_function("learned unicast, 2 addresses", |b| {
        b.iter(|| black_box(e.decide(PortId(1), black_box(&f), now)))
    });
    let mut big = engine(65_536);
    let frames: Vec<[u8; 64]> = (0..1024u32)
        .map(|i| frame(mac(i * 61 % 65_536), mac((i * 97 + 1) % 65_536)))
        .collect();
    let mut i = 0;
    g.bench_function("learned unicast, 64 k addresses", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            let ingress = PortId(1 + ((i * 97 + 1) % 65_536) as u32 % 4);
            black_box(big.decide(ingress, black_box(&frames[i]), now))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
