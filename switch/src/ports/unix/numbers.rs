//! VDE-style port numbers: clients may ask for a number (`dir[5]`,
//! QEMU `port=5`) or take the lowest free one.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why a port number could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The requested number is taken.
    #[error("port {number} is in use by {holder}")]
    InUse {
        /// The number asked for.
        number: u32,
        /// Who holds it.
        holder: String,
    },
    /// The requested number is above the switch's port count.
    #[error("port {number} is beyond this switch's {max} ports (raise --numports)")]
    OutOfRange {
        /// The number asked for.
        number: u32,
        /// The highest port number.
        max: u32,
    },
    /// Every number is taken.
    #[error("all {max} ports are in use (raise --numports)")]
    Exhausted {
        /// The highest port number.
        max: u32,
    },
}

/// The numbers in use, shared by every control socket of one switch.
#[derive(Debug)]
pub struct PortNumbers {
    max: u32,
    used: Mutex<BTreeMap<u32, String>>,
}

impl PortNumbers {
    /// Numbers 1..=`max` for normal ports, plus 0 for explicit requests.
    pub fn new(max: u32) -> PortNumbers {
        PortNumbers {
            max,
            used: Mutex::new(BTreeMap::new()),
        }
    }

    /// The highest number.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Claims `requested`, or the lowest free number ≥ 1 when `requested`
    /// is `None`.
    pub fn claim(&self, requested: Option<u32>, holder: &str) -> Result<u32, ClaimError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let number = match requested {
            Some(n) if n > self.max => {
                return Err(ClaimError::OutOfRange {
                    number: n,
                    max: self.max,
                })
            }
            Some(n) => {
                if let Some(h) = used.get(&n) {
                    return Err(ClaimError::InUse {
                        number: n,
                        holder: h.clone(),
                    });
                }
                n
            }
            None => (1..=self.max)
                .find(|n| !used.contains_key(n))
                .ok_or(ClaimError::Exhausted { max: self.max })?,
        };
        used.insert(number, holder.to_string());
        Ok(number)
    }

    /// Gives a number back.
    pub fn release(&self, number: u32) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_requested_and_refusals() {
        let n = PortNumbers::new(3);
        assert_eq!(n.claim(None, "a"), Ok(1));
        assert_eq!(n.claim(Some(3), "b"), Ok(3));
        assert_eq!(n.claim(None, "c"), Ok(2));
        assert_eq!(n.claim(None, "d"), Err(ClaimError::Exhausted { max: 3 }));
        assert_eq!(
            n.claim(Some(3), "e"),
            Err(ClaimError::InUse {
                number: 3,
                holder: "b".into()
            })
        );
        assert_eq!(
            n.claim(Some(4), "f"),
            Err(ClaimError::OutOfRange { number: 4, max: 3 })
        );
        assert_eq!(n.claim(Some(0), "port0"), Ok(0));
        n.release(2);
        assert_eq!(n.claim(None, "g"), Ok(2));
    }
}
