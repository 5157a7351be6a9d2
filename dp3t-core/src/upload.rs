//! Upload payloads (PROTOCOL.md §7): padded real uploads and fake uploads of the same shape.
//!
//! A network observer sees the size of an upload and when it happens. Every payload of a
//! scheme therefore has the same number of entries, each entry the same JSON shape, and
//! numbers of the same width (timestamps and interval numbers of this era have a fixed
//! number of digits), so a real upload with 3 keys and a fake one are byte-for-byte the
//! same length. Real entries and padding are shuffled together. Fake uploads are sent on
//! a random schedule ([`next_fake_upload_time`]), exponential with rate 0.2 per day.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::{Day, UnixTime, DAY_SECONDS, EPOCHS_PER_DAY, INTERVALS_PER_DAY};

/// Keys in every GAEN upload.
pub const GAEN_UPLOAD_KEYS: usize = 30;
/// Entries in every unlinkable upload (`14 * 96`).
pub const UNLINKABLE_UPLOAD_ENTRIES: usize = 14 * 96;
/// Days the padding of an upload is spread over (the retention).
pub const UPLOAD_DAYS: u32 = 14;
/// Fake uploads per day (λ of the exponential schedule).
pub const FAKE_UPLOAD_RATE_PER_DAY: f64 = 0.2;

/// HTTP paths of the upload endpoints.
pub mod path {
    /// GAEN (DP-3T v2).
    pub const GAEN: &str = "/v2/gaen/exposed";
    /// GAEN, DP-3T v1 API (the SDKs up to Android 2.0 and iOS 1.x).
    pub const GAEN_V1: &str = "/v1/gaen/exposed";
    /// GAEN, DP-3T v1 API: the delayed key of the next day.
    pub const GAEN_V1_NEXT_DAY: &str = "/v1/gaen/exposednextday";
    /// Low-cost (DP-3T v1).
    pub const LOW_COST: &str = "/v1/exposed";
    /// Unlinkable.
    pub const UNLINKABLE: &str = "/v1/unlinkable/exposed";
    /// Hybrid.
    pub const HYBRID: &str = "/v1/hybrid/exposed";
}

/// A ready-to-POST upload body and the path to POST it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPayload {
    /// The JSON body.
    pub json: String,
    /// The HTTP path.
    pub path: &'static str,
}

/// A 0/1 flag of an upload body (`fake`, `withFederationGateway`).
///
/// The DP-3T SDKs write it as an integer (Android's Gson `int`, iOS's `Int`) and some
/// clients as a JSON boolean; both are read. Any other value (`2`, `"1"`, `1.0`) is
/// refused, so a flag the server acts on is never guessed. It is written as `0` or `1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flag(pub bool);

impl Flag {
    /// What a flag accepts, as it appears in the parse error.
    pub const EXPECTED: &'static str = "0, 1, true or false";
}

impl Serialize for Flag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(u8::from(self.0))
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(Flag::EXPECTED)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `withFederationGateway`: written as a JSON boolean (as the Android SDK does); read
/// as a boolean, 0/1 (the iOS SDK) or `null` (absent = false).
mod federation_flag {
    use super::Flag;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(Option::<Flag>::deserialize(d)?.is_some_and(|f| f.0))
    }
}

// Wire bodies of uploads (PROTOCOL.md §7). Readers are exact about every field they use
// and tolerant of the fields they don't: unknown fields are ignored at every level (the
// DP-3T SDKs send fields the profile does not list, such as `delayedKeyDate`), while a
// field that is used and malformed, or given twice, is an error.

/// One GAEN key of an upload body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaenUploadKey {
    /// base64 of 16 bytes.
    pub key_data: String,
    /// ENIN of the key's first interval.
    pub rolling_start_number: u32,
    /// 1..=144.
    pub rolling_period: u32,
    /// 0..=8 on the server; the DP-3T SDK sends 0. Absent = 0.
    #[serde(default)]
    pub transmission_risk_level: u32,
    /// Padding key (`1`) or real key (`0`). Absent = real.
    #[serde(default)]
    pub fake: Flag,
}

/// The GAEN upload body (DP-3T v2 `POST /v2/gaen/exposed`, and v1 `POST /v1/gaen/exposed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaenUpload {
    /// Exactly 30 keys (v2) or 14 (v1).
    pub gaen_keys: Vec<GaenUploadKey>,
    /// Whether the patient agreed to sharing with the EU gateway. Read and ignored by
    /// this server; written as `false`.
    #[serde(default, with = "federation_flag")]
    pub with_federation_gateway: bool,
    /// The whole upload is fake (Android SDK 2.x and iOS SDK 2.x send it). Absent = real.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<Flag>,
    /// ENIN of the day whose key follows the next day (v1 only: the date the next-day
    /// token is bound to). Ignored by the v2 API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_key_date: Option<u32>,
}

/// The body of `POST /v1/gaen/exposednextday` (GAEN v1 API): the key of the day after
/// the first upload, sent with the next-day token that upload answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaenNextDayUpload {
    /// The key whose `rollingStartNumber` is the token's `delayedKeyDate`.
    pub delayed_key: GaenUploadKey,
    /// The whole upload is fake. Absent = real.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<Flag>,
}

/// The low-cost upload body (DP-3T v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LowCostUpload {
    /// base64 of the 32-byte day key.
    pub key: String,
    /// ms of the key's UTC midnight.
    pub key_date: u64,
    /// 1 for a fake upload.
    pub fake: Flag,
}

/// One entry of the unlinkable upload body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlinkableUploadEntry {
    /// Absolute epoch.
    pub epoch: u32,
    /// base64 of the 32-byte seed.
    pub seed: String,
    /// 1 for padding.
    pub fake: Flag,
}

/// The unlinkable upload body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlinkableUpload {
    /// Exactly 1,344 entries.
    pub seeds: Vec<UnlinkableUploadEntry>,
}

/// One entry of the hybrid upload body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridUploadEntry {
    /// Window start, ms.
    pub window_start: u64,
    /// W.
    pub window_minutes: u32,
    /// base64 of the 16-byte seed.
    pub seed: String,
    /// 1 for padding.
    pub fake: Flag,
}

/// The hybrid upload body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HybridUpload {
    /// Exactly `14 * 1440 / W` entries.
    pub windows: Vec<HybridUploadEntry>,
}

fn to_json<T: Serialize>(t: &T) -> Result<String> {
    serde_json::to_string(t).map_err(|_| Error::Encode("upload body"))
}

fn random_b64<R: RngCore>(rng: &mut R, n: usize) -> String {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    B64.encode(b)
}

/// A random day among the last [`UPLOAD_DAYS`] (today included): where padding lives.
fn padding_day<R: RngCore>(rng: &mut R, now: UnixTime) -> Day {
    Day(now.day().0.saturating_sub(rng.gen_range(0..UPLOAD_DAYS)))
}

/// A GAEN upload: `real` keys `(key, rolling_start, rolling_period)` (at most 30) padded
/// with fake keys to 30, shuffled.
pub fn gaen_upload<R: CryptoRng + RngCore>(
    real: &[([u8; 16], u32, u32)],
    now: UnixTime,
    rng: &mut R,
) -> Result<UploadPayload> {
    if real.len() > GAEN_UPLOAD_KEYS {
        return Err(Error::UploadTooLarge {
            what: "keys",
            count: real.len(),
            limit: GAEN_UPLOAD_KEYS,
        });
    }
    let mut keys: Vec<GaenUploadKey> = real
        .iter()
        .map(|(k, rsin, rp)| GaenUploadKey {
            key_data: B64.encode(k),
            rolling_start_number: *rsin,
            rolling_period: *rp,
            transmission_risk_level: 0,
            fake: Flag(false),
        })
        .collect();
    while keys.len() < GAEN_UPLOAD_KEYS {
        keys.push(GaenUploadKey {
            key_data: random_b64(rng, 16),
            rolling_start_number: padding_day(rng, now).0 * INTERVALS_PER_DAY,
            rolling_period: INTERVALS_PER_DAY,
            transmission_risk_level: 0,
            fake: Flag(true),
        });
    }
    keys.shuffle(rng);
    Ok(UploadPayload {
        json: to_json(&GaenUpload {
            gaen_keys: keys,
            with_federation_gateway: false,
            fake: None,
            delayed_key_date: None,
        })?,
        path: path::GAEN,
    })
}

/// A low-cost upload of `(SK_t, t)`, or a fake one of the same shape when `real` is None.
pub fn lowcost_upload<R: CryptoRng + RngCore>(
    real: Option<(&[u8; 32], Day)>,
    now: UnixTime,
    rng: &mut R,
) -> Result<UploadPayload> {
    let body = match real {
        Some((k, day)) => LowCostUpload {
            key: B64.encode(k),
            key_date: day.start_millis(),
            fake: Flag(false),
        },
        None => LowCostUpload {
            key: random_b64(rng, 32),
            key_date: padding_day(rng, now).start_millis(),
            fake: Flag(true),
        },
    };
    Ok(UploadPayload {
        json: to_json(&body)?,
        path: path::LOW_COST,
    })
}

/// An unlinkable upload: `real` `(epoch, seed)` pairs padded to 1,344 entries, shuffled.
pub fn unlinkable_upload<R: CryptoRng + RngCore>(
    real: &[(u32, [u8; 32])],
    now: UnixTime,
    rng: &mut R,
) -> Result<UploadPayload> {
    if real.len() > UNLINKABLE_UPLOAD_ENTRIES {
        return Err(Error::UploadTooLarge {
            what: "epochs",
            count: real.len(),
            limit: UNLINKABLE_UPLOAD_ENTRIES,
        });
    }
    let mut seeds: Vec<UnlinkableUploadEntry> = real
        .iter()
        .map(|(e, s)| UnlinkableUploadEntry {
            epoch: *e,
            seed: B64.encode(s),
            fake: Flag(false),
        })
        .collect();
    while seeds.len() < UNLINKABLE_UPLOAD_ENTRIES {
        let day = padding_day(rng, now);
        seeds.push(UnlinkableUploadEntry {
            epoch: day.0 * EPOCHS_PER_DAY + rng.gen_range(0..EPOCHS_PER_DAY),
            seed: random_b64(rng, 32),
            fake: Flag(true),
        });
    }
    seeds.shuffle(rng);
    Ok(UploadPayload {
        json: to_json(&UnlinkableUpload { seeds })?,
        path: path::UNLINKABLE,
    })
}

/// A hybrid upload: `real` `(window start, seed)` pairs of `minutes`-long windows, padded
/// to `14 * 1440 / W` entries, shuffled.
pub fn hybrid_upload<R: CryptoRng + RngCore>(
    real: &[(UnixTime, [u8; 16])],
    minutes: crate::hybrid::WindowMinutes,
    now: UnixTime,
    rng: &mut R,
) -> Result<UploadPayload> {
    let n = minutes.upload_entries();
    if real.len() > n {
        return Err(Error::UploadTooLarge {
            what: "windows",
            count: real.len(),
            limit: n,
        });
    }
    let ms = |t: UnixTime| t.0 * 1000;
    let mut windows: Vec<HybridUploadEntry> = real
        .iter()
        .map(|(start, s)| HybridUploadEntry {
            window_start: ms(*start),
            window_minutes: minutes.get(),
            seed: B64.encode(s),
            fake: Flag(false),
        })
        .collect();
    let per_day = (DAY_SECONDS / minutes.seconds()).max(1);
    while windows.len() < n {
        let day = padding_day(rng, now);
        let start = day.start().0 + rng.gen_range(0..per_day) * minutes.seconds();
        windows.push(HybridUploadEntry {
            window_start: start * 1000,
            window_minutes: minutes.get(),
            seed: random_b64(rng, 16),
            fake: Flag(true),
        });
    }
    windows.shuffle(rng);
    Ok(UploadPayload {
        json: to_json(&HybridUpload { windows })?,
        path: path::HYBRID,
    })
}

/// When to send the next fake upload: `now` plus an exponential delay of rate
/// λ = 0.2 per day (mean 5 days), drawn from `rng`.
pub fn next_fake_upload_time<R: CryptoRng + RngCore>(now: UnixTime, rng: &mut R) -> UnixTime {
    // u in (0, 1]: -ln(u) is finite and ≥ 0.
    let u: f64 = 1.0 - rng.gen::<f64>();
    let days = -u.ln() / FAKE_UPLOAD_RATE_PER_DAY;
    now.plus((days * DAY_SECONDS as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(5)
    }

    #[test]
    fn fake_uploads_have_the_size_of_real_ones() {
        let now = UnixTime(1_700_000_000);
        let mut r = rng();
        let real = gaen_upload(&[([1; 16], now.day().0 * 144, 144)], now, &mut r).unwrap();
        let fake = gaen_upload(&[], now, &mut r).unwrap();
        assert_eq!(real.json.len(), fake.json.len());
        let parsed: GaenUpload = serde_json::from_str(&real.json).unwrap();
        assert_eq!(parsed.gaen_keys.len(), 30);
        assert_eq!(parsed.gaen_keys.iter().filter(|k| !k.fake.0).count(), 1);

        let a = lowcost_upload(Some((&[2; 32], now.day())), now, &mut r).unwrap();
        let b = lowcost_upload(None, now, &mut r).unwrap();
        assert_eq!(a.json.len(), b.json.len());

        let a = unlinkable_upload(&[(now.epoch().unwrap().0, [3; 32])], now, &mut r).unwrap();
        let b = unlinkable_upload(&[], now, &mut r).unwrap();
        assert_eq!(a.json.len(), b.json.len());

        let w = crate::hybrid::WindowMinutes::DEFAULT;
        let a =
            hybrid_upload(&[(UnixTime(now.0 - now.0 % 7200), [4; 16])], w, now, &mut r).unwrap();
        let b = hybrid_upload(&[], w, now, &mut r).unwrap();
        assert_eq!(a.json.len(), b.json.len());
        let parsed: HybridUpload = serde_json::from_str(&a.json).unwrap();
        assert_eq!(parsed.windows.len(), 168);
    }

    #[test]
    fn flags_read_integers_and_booleans_only() {
        for (json, want) in [("0", false), ("1", true), ("false", false), ("true", true)] {
            assert_eq!(
                serde_json::from_str::<Flag>(json).unwrap(),
                Flag(want),
                "{json}"
            );
        }
        for bad in ["2", "-1", "\"1\"", "1.0", "null", "[]"] {
            let e = serde_json::from_str::<Flag>(bad).unwrap_err().to_string();
            assert!(e.contains(Flag::EXPECTED), "{bad}: {e}");
        }
        assert_eq!(serde_json::to_string(&Flag(true)).unwrap(), "1");
    }

    #[test]
    fn gaen_bodies_of_the_sdks_parse_and_unknown_fields_are_ignored() {
        let key = r#"{"keyData":"AAAAAAAAAAAAAAAAAAAAAA==","rollingStartNumber":2700000,
            "rollingPeriod":144,"transmissionRiskLevel":0,"fake":0,"daysSinceOnsetOfSymptoms":3}"#;
        for (extra, fake, wfg) in [
            (r#","delayedKeyDate":2993472,"fake":0"#, Some(false), false),
            (
                r#","fake":1,"withFederationGateway":true"#,
                Some(true),
                true,
            ),
            (r#","fake":0,"withFederationGateway":1"#, Some(false), true),
            (
                r#","withFederationGateway":null,"unknown":{"a":[1]}"#,
                None,
                false,
            ),
        ] {
            let json = format!(r#"{{"gaenKeys":[{key}]{extra}}}"#);
            let u: GaenUpload = serde_json::from_str(&json).unwrap();
            assert_eq!(u.fake.map(|f| f.0), fake, "{json}");
            assert_eq!(u.with_federation_gateway, wfg, "{json}");
            assert_eq!(u.gaen_keys[0].rolling_period, 144);
        }
        // A used field given twice, or of the wrong type, is still an error.
        for bad in [
            format!(r#"{{"gaenKeys":[{key}],"gaenKeys":[]}}"#),
            format!(r#"{{"gaenKeys":[{key}],"fake":"1"}}"#),
            format!(r#"{{"gaenKeys":[{key}],"withFederationGateway":"true"}}"#),
            r#"{"gaenKeys":[{"keyData":"AA==","rollingStartNumber":"1","rollingPeriod":144}]}"#
                .to_owned(),
        ] {
            assert!(serde_json::from_str::<GaenUpload>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fake_schedule_has_mean_five_days() {
        let mut r = rng();
        let now = UnixTime(1_700_000_000);
        let n = 20_000;
        let total: f64 = (0..n)
            .map(|_| (next_fake_upload_time(now, &mut r).0 - now.0) as f64 / 86_400.0)
            .sum();
        let mean = total / n as f64;
        assert!((4.8..5.2).contains(&mean), "mean {mean}");
    }
}
