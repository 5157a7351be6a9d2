//! A minimal in-process publisher: an upload body in, the signed batch the backend would
//! publish out, for every scheme.
//!
//! Stories and examples run two phones in one process. Between the positive phone's
//! upload and the other phone's download there must be a server; this is the smallest one
//! that publishes through the core's own encoders and signs with a real key. It reads the
//! upload bodies loosely (as JSON values, only the fields it needs), so it keeps working
//! while the typed upload structs of the core evolve. Not for production use: it does no
//! authentication, no batching and no validation beyond what publishing needs.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use dp3t_core::cuckoo::FilterBuilder;
use dp3t_core::engine::{PublishedBatch, Scheme};
use dp3t_core::export::{write_export_zip, ExportBatch, ExportKey, SignatureInfo};
use dp3t_core::hybrid::{Window, WindowMinutes, WindowSeed};
use dp3t_core::lowcost::DayKey;
use dp3t_core::published::{HybridEntry, HybridList, LowCostEntry, LowCostList};
use dp3t_core::signing::{sign_response, ResponseClaims, SigningKey};
use dp3t_core::time::{Day, Epoch, UnixTime};
use dp3t_core::unlinkable::{EpochSeed, HashedObservation};
use dp3t_core::upload::UploadPayload;

use crate::{Error, Result};

/// A published body with its `Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Body.
    pub body: Vec<u8>,
    /// Signature header.
    pub signature: String,
    /// Release time.
    pub release_time: UnixTime,
    /// Scheme.
    pub scheme: Scheme,
}

impl Published {
    /// As a batch to ingest.
    pub fn as_batch(&self) -> PublishedBatch<'_> {
        PublishedBatch {
            body: &self.body,
            signature: Some(&self.signature),
            release_time: self.release_time,
        }
    }
}

fn sign(body: Vec<u8>, release: UnixTime, key: &SigningKey, scheme: Scheme) -> Result<Published> {
    let claims = ResponseClaims::for_body(
        &body,
        "dp3t-test",
        release.0,
        release.0 + 86_400 * 14,
        Some(release.0 * 1000),
    );
    Ok(Published {
        signature: sign_response(&body, key, &claims)?,
        body,
        release_time: release,
        scheme,
    })
}

/// Publish a low-cost upload body as a one-key `ProtoExposedList`.
pub fn publish_lowcost(
    upload: &UploadPayload,
    release: UnixTime,
    key: &SigningKey,
) -> Result<Published> {
    let u = body(upload)?;
    let list = LowCostList {
        release_time: release,
        entries: vec![LowCostEntry {
            key: DayKey::from_slice(&b64(field(&u, "key")?)?)?,
            day: Day::from_midnight_millis(number(&u, "keyDate")?)?,
        }],
    };
    sign(list.encode()?, release, key, Scheme::LowCost)
}

/// Publish the real keys of a GAEN upload body as a signed export zip.
pub fn publish_gaen(
    upload: &UploadPayload,
    release: UnixTime,
    key: &SigningKey,
) -> Result<Published> {
    let u = body(upload)?;
    let mut keys = Vec::new();
    for k in real(list(&u, "gaenKeys")?) {
        let data = b64(field(k, "keyData")?)?;
        keys.push(ExportKey {
            key_data: data.as_slice().try_into().map_err(|_| {
                Error::Upload(format!("keyData: {} bytes, expected 16", data.len()))
            })?,
            rolling_start_interval_number: small(k, "rollingStartNumber")?,
            rolling_period: small(k, "rollingPeriod")?,
            transmission_risk_level: 0,
            report_type: Some(1),
            days_since_onset_of_symptoms: None,
        });
    }
    keys.sort_by_key(|k| k.key_data);
    let batch = ExportBatch {
        start_timestamp: release.0.saturating_sub(7_200),
        end_timestamp: release.0,
        region: "CH".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        revised_keys: vec![],
    };
    let info = SignatureInfo {
        verification_key_version: "v1".into(),
        verification_key_id: "dp3t-test".into(),
    };
    let zip = write_export_zip(&batch, &info, key)?;
    sign(zip, release, key, Scheme::Gaen)
}

/// Publish the real seeds of an unlinkable upload body as a signed DPCF filter.
pub fn publish_unlinkable(
    upload: &UploadPayload,
    release: UnixTime,
    key: &SigningKey,
) -> Result<Published> {
    let u = body(upload)?;
    let mut items = Vec::new();
    for e in real(list(&u, "seeds")?) {
        let seed = EpochSeed::from_slice(&b64(field(e, "seed")?)?)?;
        items.push(HashedObservation::of_seed(&seed, Epoch(small(e, "epoch")?)).0);
    }
    let filter = FilterBuilder::new().build(&items)?;
    sign(filter.to_bytes(), release, key, Scheme::Unlinkable)
}

/// Publish the real windows of a hybrid upload body as a signed `HybridExposedList`.
pub fn publish_hybrid(
    upload: &UploadPayload,
    release: UnixTime,
    key: &SigningKey,
) -> Result<Published> {
    let u = body(upload)?;
    let mut entries = Vec::new();
    for w in real(list(&u, "windows")?) {
        entries.push(HybridEntry {
            window: Window::new(
                UnixTime::from_millis(number(w, "windowStart")?),
                WindowMinutes::new(small(w, "windowMinutes")?)?,
            )?,
            seed: WindowSeed::from_slice(&b64(field(w, "seed")?)?)?,
        });
    }
    let list = HybridList {
        release_time: release,
        entries,
    };
    sign(list.encode()?, release, key, Scheme::Hybrid)
}

/// Publish any upload body of `scheme`.
pub fn publish(
    scheme: Scheme,
    upload: &UploadPayload,
    release: UnixTime,
    key: &SigningKey,
) -> Result<Published> {
    match scheme {
        Scheme::Gaen => publish_gaen(upload, release, key),
        Scheme::LowCost => publish_lowcost(upload, release, key),
        Scheme::Unlinkable => publish_unlinkable(upload, release, key),
        Scheme::Hybrid => publish_hybrid(upload, release, key),
    }
}

fn body(upload: &UploadPayload) -> Result<Value> {
    serde_json::from_str(&upload.json).map_err(|e| Error::Upload(e.to_string()))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Upload(format!("{name}: missing or not a string")))
}

fn number(v: &Value, name: &str) -> Result<u64> {
    v.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Upload(format!("{name}: missing or not a number")))
}

fn small(v: &Value, name: &str) -> Result<u32> {
    u32::try_from(number(v, name)?).map_err(|_| Error::Upload(format!("{name}: above u32")))
}

fn list<'a>(v: &'a Value, name: &str) -> Result<&'a [Value]> {
    v.get(name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| Error::Upload(format!("{name}: missing or not a list")))
}

/// The entries whose `fake` flag is off (`0` or `false`, as the core has spelled it).
fn real(entries: &[Value]) -> impl Iterator<Item = &Value> {
    entries.iter().filter(|e| match e.get("fake") {
        Some(Value::Bool(b)) => !b,
        Some(n) => n.as_u64() == Some(0),
        None => true,
    })
}

fn b64(s: &str) -> Result<Vec<u8>> {
    B64.decode(s).map_err(|e| Error::Upload(e.to_string()))
}
