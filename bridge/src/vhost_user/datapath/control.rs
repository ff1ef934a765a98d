//! The control queue, offered only with more than one queue pair (a guest
//! needs it to choose how many pairs it uses): VIRTIO_NET_CTRL_MQ
//! VQ_PAIRS_SET is answered and obeyed, every other command refused (no
//! other control feature is offered, so a guest sends none).

use super::{next_chain, Bad, Rings};
use vhost_user_backend::{VringMutex, VringT};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_ERR, VIRTIO_NET_OK,
};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryMmap};

/// The longest command read: class, command, and a `u16` of data.
const MAX_COMMAND: usize = 64;

/// Answers every command the guest posted on `vring`; the pairs it asks
/// for (1 to `offered`) are kept in `rings`. Returns the commands the
/// guest got wrong (a chain with no room for the answer, outside its
/// memory), for the port to count.
pub(in crate::vhost_user) fn answer(rings: &Rings, vring: &VringMutex, offered: u16) -> usize {
    let mut state = vring.get_mut();
    if !state.get_queue().ready() {
        return 0;
    }
    let mem = rings.mem.memory();
    let mut bad = 0;
    let mut answered = false;
    // At most a queue's worth per kick: a ring that keeps refilling itself
    // waits for the next kick.
    for _ in 0..state.get_queue().size() {
        let queue = state.get_queue_mut();
        let chain = match next_chain(queue, &mem) {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(_) => {
                bad += 1;
                break;
            }
        };
        let head = chain.head_index();
        let written = match one(chain, &mem, rings, offered) {
            Ok(n) => n,
            Err(_) => {
                bad += 1;
                0
            }
        };
        if queue.add_used(&*mem, head, written).is_err() {
            bad += 1;
            break;
        }
        answered = true;
    }
    if answered && state.needs_notification().unwrap_or(true) {
        let _ = state.signal_used_queue();
    }
    bad
}

/// Reads one command, carries it out, writes the one-byte answer into
/// the chain's first writable byte; returns the bytes written.
fn one(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    rings: &Rings,
    offered: u16,
) -> Result<u32, Bad> {
    let mut command = [0u8; MAX_COMMAND];
    let mut len = 0usize;
    let mut answer_at = None;
    for desc in chain {
        if desc.is_write_only() {
            if desc.len() >= 1 && answer_at.is_none() {
                answer_at = Some(desc.addr());
            }
            continue;
        }
        let n = (desc.len() as usize).min(MAX_COMMAND - len);
        if n > 0 {
            mem.read_slice(&mut command[len..len + n], desc.addr())
                .map_err(|_| Bad::Descriptor)?;
            len += n;
        }
    }
    let at = answer_at.ok_or(Bad::Descriptor)?;
    let ok = match (
        command.get(..len),
        u32::from(command[0]),
        u32::from(command[1]),
    ) {
        (Some(c), VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) if c.len() >= 4 => {
            let pairs = u16::from_le_bytes([c[2], c[3]]);
            let fits = (1..=offered).contains(&pairs);
            if fits {
                rings.use_pairs(pairs);
            }
            fits
        }
        _ => false,
    };
    let status = if ok { VIRTIO_NET_OK } else { VIRTIO_NET_ERR } as u8;
    mem.write_obj(status, at).map_err(|_| Bad::Descriptor)?;
    Ok(1)
}
