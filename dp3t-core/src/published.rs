//! Published lists of the DP-3T designs (PROTOCOL.md §9.2, §9.3): protobuf encoding and
//! decoding of the low-cost `ProtoExposedList` and the hybrid `HybridExposedList`.
//!
//! These bodies carry no signature of their own: they travel with a `Signature` response
//! header (§9.5, [`crate::signing`]), which the phone checks before it decodes anything.
//! Decoding turns wire messages into typed values once ([`LowCostEntry`],
//! [`HybridEntry`]), so matching never sees a key of the wrong length.

use prost::Message;

use crate::error::{Error, Result};
use crate::hybrid::{Window, WindowMinutes, WindowSeed};
use crate::lowcost::DayKey;
use crate::time::{Day, UnixTime};

/// Largest list body a phone decodes (64 MiB), so a hostile body can't exhaust memory.
pub const MAX_LIST_BYTES: usize = 64 << 20;

/// `message ProtoExposedList { int64 batchReleaseTime = 1; repeated ProtoExposee exposed = 2; }`
#[derive(Clone, PartialEq, Message)]
pub struct ProtoExposedList {
    /// Release time of the batch, ms.
    #[prost(int64, tag = "1")]
    pub batch_release_time: i64,
    /// The published keys.
    #[prost(message, repeated, tag = "2")]
    pub exposed: Vec<ProtoExposee>,
}

/// `message ProtoExposee { bytes key = 2; int64 keyDate = 3; }`
#[derive(Clone, PartialEq, Message)]
pub struct ProtoExposee {
    /// The 32-byte day key.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// ms of the UTC midnight of the key's day.
    #[prost(int64, tag = "3")]
    pub key_date: i64,
}

/// `message HybridExposedList { int64 batchReleaseTime = 1; repeated HybridSeed seeds = 2; }`
#[derive(Clone, PartialEq, Message)]
pub struct HybridExposedList {
    /// Release time of the batch, ms.
    #[prost(int64, tag = "1")]
    pub batch_release_time: i64,
    /// The published window seeds.
    #[prost(message, repeated, tag = "2")]
    pub seeds: Vec<HybridSeed>,
}

/// `message HybridSeed { bytes seed = 1; int64 windowStart = 2; int32 windowMinutes = 3; }`
#[derive(Clone, PartialEq, Message)]
pub struct HybridSeed {
    /// The 16-byte seed.
    #[prost(bytes = "vec", tag = "1")]
    pub seed: Vec<u8>,
    /// Window start, ms.
    #[prost(int64, tag = "2")]
    pub window_start: i64,
    /// Window length, minutes.
    #[prost(int32, tag = "3")]
    pub window_minutes: i32,
}

/// A published low-cost key: `(SK_t, t)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowCostEntry {
    /// The day key of the first contagious day.
    pub key: DayKey,
    /// That day.
    pub day: Day,
}

/// A published hybrid window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridEntry {
    /// The window.
    pub window: Window,
    /// Its seed.
    pub seed: WindowSeed,
}

/// A decoded low-cost list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowCostList {
    /// `batchReleaseTime` as unix time.
    pub release_time: UnixTime,
    /// The keys.
    pub entries: Vec<LowCostEntry>,
}

/// A decoded hybrid list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridList {
    /// `batchReleaseTime` as unix time.
    pub release_time: UnixTime,
    /// The windows.
    pub entries: Vec<HybridEntry>,
}

fn list_err(e: impl std::fmt::Display) -> Error {
    Error::PublishedList(e.to_string())
}

fn release(ms: i64) -> Result<UnixTime> {
    u64::try_from(ms)
        .map(UnixTime::from_millis)
        .map_err(|_| list_err(format!("negative batchReleaseTime {ms}")))
}

fn check_size(body: &[u8]) -> Result<()> {
    if body.len() > MAX_LIST_BYTES {
        return Err(list_err(format!(
            "body of {} bytes exceeds {MAX_LIST_BYTES}",
            body.len()
        )));
    }
    Ok(())
}

impl LowCostList {
    /// Decode and type-check a `ProtoExposedList` body.
    pub fn decode(body: &[u8]) -> Result<Self> {
        check_size(body)?;
        let raw = ProtoExposedList::decode(body).map_err(list_err)?;
        let entries = raw
            .exposed
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let key = DayKey::from_slice(&e.key)
                    .map_err(|err| list_err(format!("exposed[{i}]: {err}")))?;
                let ms = u64::try_from(e.key_date)
                    .map_err(|_| list_err(format!("exposed[{i}]: negative keyDate")))?;
                let day = Day::from_midnight_millis(ms)
                    .map_err(|err| list_err(format!("exposed[{i}]: {err}")))?;
                Ok(LowCostEntry { key, day })
            })
            .collect::<Result<_>>()?;
        Ok(LowCostList {
            release_time: release(raw.batch_release_time)?,
            entries,
        })
    }
    /// Encode as a `ProtoExposedList` body.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let raw = ProtoExposedList {
            batch_release_time: ms_i64(self.release_time)?,
            exposed: self
                .entries
                .iter()
                .map(|e| ProtoExposee {
                    key: e.key.as_bytes().to_vec(),
                    key_date: e.day.start_millis() as i64,
                })
                .collect(),
        };
        Ok(raw.encode_to_vec())
    }
}

fn ms_i64(t: UnixTime) -> Result<i64> {
    i64::try_from(t.as_millis()?).map_err(|_| list_err("release time too large"))
}

impl HybridList {
    /// Decode and type-check a `HybridExposedList` body.
    pub fn decode(body: &[u8]) -> Result<Self> {
        check_size(body)?;
        let raw = HybridExposedList::decode(body).map_err(list_err)?;
        let entries = raw
            .seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let err = |e: Error| list_err(format!("seeds[{i}]: {e}"));
                let seed = WindowSeed::from_slice(&s.seed).map_err(err)?;
                let minutes = u32::try_from(s.window_minutes)
                    .map_err(|_| list_err(format!("seeds[{i}]: negative windowMinutes")))
                    .and_then(|m| WindowMinutes::new(m).map_err(err))?;
                let start_ms = u64::try_from(s.window_start)
                    .map_err(|_| list_err(format!("seeds[{i}]: negative windowStart")))?;
                if start_ms % 1000 != 0 {
                    return Err(list_err(format!(
                        "seeds[{i}]: windowStart not whole seconds"
                    )));
                }
                let window = Window::new(UnixTime::from_millis(start_ms), minutes).map_err(err)?;
                Ok(HybridEntry { window, seed })
            })
            .collect::<Result<_>>()?;
        Ok(HybridList {
            release_time: release(raw.batch_release_time)?,
            entries,
        })
    }
    /// Encode as a `HybridExposedList` body.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let raw = HybridExposedList {
            batch_release_time: ms_i64(self.release_time)?,
            seeds: self
                .entries
                .iter()
                .map(|e| {
                    Ok(HybridSeed {
                        seed: e.seed.as_bytes().to_vec(),
                        window_start: ms_i64(e.window.start())?,
                        window_minutes: e.window.minutes().get() as i32,
                    })
                })
                .collect::<Result<_>>()?,
        };
        Ok(raw.encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip() {
        let l = LowCostList {
            release_time: UnixTime(7_200 * 1000),
            entries: vec![LowCostEntry {
                key: DayKey::from_bytes([3; 32]),
                day: Day(19_000),
            }],
        };
        assert_eq!(LowCostList::decode(&l.encode().unwrap()).unwrap(), l);
        let w = WindowMinutes::new(60).unwrap();
        let h = HybridList {
            release_time: UnixTime(7_200 * 1000),
            entries: vec![HybridEntry {
                window: Window::new(UnixTime(3_600 * 400), w).unwrap(),
                seed: WindowSeed::from_bytes([4; 16]),
            }],
        };
        assert_eq!(HybridList::decode(&h.encode().unwrap()).unwrap(), h);
    }

    #[test]
    fn malformed_lists_are_errors() {
        let bad_key = ProtoExposedList {
            batch_release_time: 0,
            exposed: vec![ProtoExposee {
                key: vec![1; 31],
                key_date: 0,
            }],
        };
        assert!(LowCostList::decode(&bad_key.encode_to_vec()).is_err());
        let bad_date = ProtoExposedList {
            batch_release_time: 0,
            exposed: vec![ProtoExposee {
                key: vec![1; 32],
                key_date: 5,
            }],
        };
        assert!(LowCostList::decode(&bad_date.encode_to_vec()).is_err());
        let bad_w = HybridExposedList {
            batch_release_time: 0,
            seeds: vec![HybridSeed {
                seed: vec![0; 16],
                window_start: 0,
                window_minutes: 20,
            }],
        };
        assert!(HybridList::decode(&bad_w.encode_to_vec()).is_err());
        assert!(LowCostList::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = LowCostList::decode(&b);
            let _ = HybridList::decode(&b);
        }
    }
}
