//! A slab of sessions addressed by (index, generation), and the mio tokens that name one leg of one.
//!
//! A slot's generation goes up every time it is freed, so a token, a timer or a resolver answer made for
//! an earlier occupant of the slot never reaches the current one.

use mio::Token;
use wsbridge_core::session::Leg;

/// Half the bits of a token: the generation sits in the upper half, the index and the leg in the lower.
const HALF: u32 = usize::BITS / 2;
/// Generations and indices use one bit less than their half, so a session token never has its top bit
/// set: tokens with it set are free for the loop's own use ([`WAKER`]).
const GEN_MASK: usize = (1 << (HALF - 1)) - 1;
/// Slots per loop (2^31 - 1 on 64-bit targets).
pub(crate) const MAX_INDEX: usize = (1 << (HALF - 1)) - 1;

/// The loop's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// The key of a session: its slot and the slot's generation when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub index: usize,
    pub gen: usize,
}

impl Key {
    /// The token of `leg` of this session.
    pub fn token(self, leg: Leg) -> Token {
        let leg_bit = match leg {
            Leg::Down => 0,
            Leg::Up => 1,
        };
        Token(self.gen << HALF | self.index << 1 | leg_bit)
    }

    /// The session and leg a token names, or `None` for the loop's own tokens.
    pub fn from_token(t: Token) -> Option<(Key, Leg)> {
        if t.0 >> (usize::BITS - 1) == 1 {
            return None;
        }
        let leg = if t.0 & 1 == 0 { Leg::Down } else { Leg::Up };
        let index = (t.0 & ((1 << HALF) - 1)) >> 1;
        Some((
            Key {
                index,
                gen: t.0 >> HALF,
            },
            leg,
        ))
    }
}

struct Slot<T> {
    gen: usize,
    val: Option<T>,
}

/// Values in reusable slots.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Stores `val`; `None` (and `val` back) when every index is taken.
    pub fn insert(&mut self, val: T) -> Result<Key, T> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() <= MAX_INDEX => {
                self.slots.push(Slot { gen: 0, val: None });
                self.slots.len() - 1
            }
            None => return Err(val),
        };
        let slot = &mut self.slots[index];
        slot.val = Some(val);
        self.len += 1;
        Ok(Key {
            index,
            gen: slot.gen,
        })
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index) {
            Some(slot) if slot.gen == key.gen => slot.val.as_mut(),
            _ => None,
        }
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slots.get(key.index) {
            Some(slot) if slot.gen == key.gen => slot.val.as_ref(),
            _ => None,
        }
    }

    /// Takes the value out; the slot's generation moves on so old keys no longer match.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.index)?;
        if slot.gen != key.gen {
            return None;
        }
        let val = slot.val.take()?;
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(key.index);
        self.len -= 1;
        Some(val)
    }

    /// The keys of every stored value.
    pub fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.val.is_some())
            .map(|(index, s)| Key { index, gen: s.gen })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stale_keys_miss() {
        let mut slab = Slab::new();
        let a = slab.insert("a").unwrap();
        let b = slab.insert("b").unwrap();
        for (k, leg) in [(a, Leg::Down), (b, Leg::Up)] {
            assert_eq!(Key::from_token(k.token(leg)), Some((k, leg)));
        }
        assert_eq!(Key::from_token(WAKER), None);
        assert_eq!(slab.remove(a), Some("a"));
        let c = slab.insert("c").unwrap();
        assert_eq!(c.index, a.index);
        assert_ne!(c.gen, a.gen);
        assert!(slab.get_mut(a).is_none());
        assert!(slab.remove(a).is_none());
        assert_eq!(slab.get_mut(c), Some(&mut "c"));
        assert_eq!(slab.len(), 2);
        let big = Key {
            index: MAX_INDEX,
            gen: GEN_MASK,
        };
        assert_eq!(Key::from_token(big.token(Leg::Up)), Some((big, Leg::Up)));
    }
}
