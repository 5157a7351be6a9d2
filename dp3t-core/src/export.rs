//! GAEN key-export files (PROTOCOL.md §9.1): encode, sign, parse and verify.
//!
//! An export is a zip with exactly two entries: `export.bin`, the 16-byte header
//! [`EXPORT_HEADER`] followed by a `TemporaryExposureKeyExport` protobuf, and `export.sig`,
//! a `TEKSignatureList` whose signatures are ECDSA P-256 / SHA-256 (DER) over the whole of
//! `export.bin`, header included.
//!
//! ## Shape
//!
//! * [`write_export_zip`] builds the file on the server from an [`ExportBatch`]; its bytes
//!   are deterministic (fixed entry timestamps, RFC 6979 signatures), so a bucket can be
//!   built once and cached.
//! * [`parse_export_zip`] turns untrusted bytes into an [`UnverifiedExport`]: every
//!   structural check (zip, entries, sizes, header, protobuf, key fields) happens here,
//!   once, and each failure is a typed [`ExportError`]. The only way from there to an
//!   [`ExportBatch`] a caller should act on is [`UnverifiedExport::verify`] (or the
//!   shorthand [`read_verified_export`]), which succeeds if any signature of the list
//!   verifies over the exact `export.bin` bytes.
//!
//! The protobuf messages are written by hand with `prost` derives (no `protoc` at build
//! time); proto2 `optional` fields are `Option`s, so "absent" and "zero" stay distinct.
//!
//! ## Limits
//!
//! Export files come from the network, so reading is bounded: the archive may be at most
//! [`MAX_ZIP_BYTES`], `export.bin` at most [`MAX_EXPORT_BIN_BYTES`] and `export.sig` at most
//! [`MAX_EXPORT_SIG_BYTES`] uncompressed. Both the declared size and the bytes actually
//! inflated are checked (the reader never inflates more than the limit plus one byte), so
//! a zip bomb cannot exhaust memory. Strings (region, key id, key version) are at most
//! [`MAX_STRING_FIELD_BYTES`]. The writer enforces the same limits, so everything it
//! writes, this module reads back.
//!
//! The zip parser allocates per central-directory entry before this module can look at the
//! names, so the entry count is checked first, on the raw bytes: an end-of-central-directory
//! record the parser could use that announces more than [`MAX_ZIP_ENTRIES`] entries, or
//! that leads to a ZIP64 record (an export never needs one), is refused before the parser
//! runs. A crafted 36 MB directory of 400,000 entries costs a scan of the last 64 KiB, not
//! hundreds of megabytes.

use std::io::{Cursor, Read as _, Write as _};

use prost::bytes::Bytes;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{Error, ExportError, Result, SignatureError};
use crate::signing::{PublicKey, SigningKey};
use crate::time::RollingPeriod;

/// The 16 bytes `export.bin` starts with.
pub const EXPORT_HEADER: &[u8; 16] = b"EK Export v1    ";

/// OID of ECDSA with SHA-256 (`ecdsa-with-SHA256`), the only signature algorithm of
/// GAEN exports.
pub const SIGNATURE_ALGORITHM: &str = "1.2.840.10045.4.3.2";

/// Name of the entry holding the header and the keys.
pub const EXPORT_BIN: &str = "export.bin";

/// Name of the entry holding the signature list.
pub const EXPORT_SIG: &str = "export.sig";

/// Largest `export.bin` read or written, uncompressed: 64 MiB (about 2 million keys;
/// Google's server splits batches far below this).
pub const MAX_EXPORT_BIN_BYTES: u64 = 64 * 1024 * 1024;

/// Largest `export.sig` read or written, uncompressed: 64 KiB (hundreds of signatures).
pub const MAX_EXPORT_SIG_BYTES: u64 = 64 * 1024;

/// Largest archive accepted: room for both entries stored uncompressed plus 1 MiB of zip
/// headers and comment.
pub const MAX_ZIP_BYTES: u64 = MAX_EXPORT_BIN_BYTES + MAX_EXPORT_SIG_BYTES + 1024 * 1024;

/// Most entries a zip may announce before it is refused unparsed. An export has 2; up to
/// this many, the parser runs so that [`ExportError::Entries`] can list the names it found.
pub const MAX_ZIP_ENTRIES: u16 = 8;

/// Longest `region`, `verification_key_id` or `verification_key_version`, in bytes.
pub const MAX_STRING_FIELD_BYTES: usize = 1024;

/// The rolling period a key has when its export omits it (the proto default).
pub const DEFAULT_ROLLING_PERIOD: u32 = RollingPeriod::FULL_DAY.get();

/// Largest initial buffer reserved from an entry's declared size; larger entries grow
/// the buffer as they are really inflated, so a lying header cannot reserve 64 MiB.
const INITIAL_READ_CAPACITY: u64 = 1024 * 1024;

/// One Temporary Exposure Key of an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportKey {
    /// The 16-byte TEK.
    pub key_data: [u8; 16],
    /// First ENIN of the key's validity (`int32` on the wire, so at most `i32::MAX`).
    pub rolling_start_interval_number: u32,
    /// Number of 10-minute intervals the key is valid for, `1..=144`
    /// (144 when the file omits it).
    pub rolling_period: u32,
    /// Transmission risk level (deprecated by GAEN v1.5; 0 when the file omits it).
    pub transmission_risk_level: i32,
    /// Report type: 0 unknown, 1 confirmed test, 2 confirmed clinical diagnosis,
    /// 3 self report, 4 recursive, 5 revoked. Passed through as read.
    pub report_type: Option<i32>,
    /// Days since onset of symptoms (`sint32`), if known.
    pub days_since_onset_of_symptoms: Option<i32>,
}

/// The content of `export.bin`: batch header fields and keys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExportBatch {
    /// Start of the time window the keys were published in, unix seconds.
    pub start_timestamp: u64,
    /// End of that window, unix seconds (`>= start_timestamp`).
    pub end_timestamp: u64,
    /// Region (e.g. an ISO country code), at most [`MAX_STRING_FIELD_BYTES`].
    pub region: String,
    /// Number of this file in its batch, `1..=batch_size` (1 when the file omits it).
    pub batch_num: i32,
    /// Number of files in the batch, `>= 1` (1 when the file omits it).
    pub batch_size: i32,
    /// The keys, in file order.
    pub keys: Vec<ExportKey>,
    /// Keys re-published with changed metadata (e.g. a revoked report type).
    pub revised_keys: Vec<ExportKey>,
}

/// Identifies the key an export is signed with; phones look it up by these two strings.
/// The algorithm is always [`SIGNATURE_ALGORITHM`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureInfo {
    /// Key version, e.g. `"v1"`.
    pub verification_key_version: String,
    /// Key id, e.g. the MCC of the country, or a name agreed with Apple and Google.
    pub verification_key_id: String,
}

/// Serialize, sign and zip a batch: `export.bin` (header and protobuf) and `export.sig`
/// (one signature by `key`, labelled with `info`), both deflated.
///
/// Keys are written **in the order given**: PROTOCOL.md requires random or sorted order,
/// never upload order, so the caller shuffles or sorts them first. `info` is also
/// recorded in `export.bin` (`signature_infos`), as Google's server does.
///
/// Errors: [`ExportError::Key`] for a key outside the format (rolling period not in
/// `1..=144`, start interval above `i32::MAX`), [`ExportError::Field`] for a bad batch
/// number or size or `start_timestamp > end_timestamp`, [`ExportError::TooLarge`] for an
/// over-long string or an `export.bin` above [`MAX_EXPORT_BIN_BYTES`].
pub fn write_export_zip(
    batch: &ExportBatch,
    info: &SignatureInfo,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    check_batch_fields(
        batch.start_timestamp,
        batch.end_timestamp,
        &batch.region,
        batch.batch_num,
        batch.batch_size,
    )?;
    check_string("verification_key_version", &info.verification_key_version)?;
    check_string("verification_key_id", &info.verification_key_id)?;
    let signature_info = proto::SignatureInfo {
        verification_key_version: Some(info.verification_key_version.clone()),
        verification_key_id: Some(info.verification_key_id.clone()),
        signature_algorithm: Some(SIGNATURE_ALGORITHM.to_owned()),
    };
    let export = proto::TemporaryExposureKeyExport {
        start_timestamp: Some(batch.start_timestamp),
        end_timestamp: Some(batch.end_timestamp),
        region: Some(batch.region.clone()),
        batch_num: Some(batch.batch_num),
        batch_size: Some(batch.batch_size),
        signature_infos: vec![signature_info.clone()],
        keys: keys_to_proto(&batch.keys, "keys")?,
        revised_keys: keys_to_proto(&batch.revised_keys, "revised_keys")?,
    };

    let bin_len = EXPORT_HEADER.len() + export.encoded_len();
    if bin_len as u64 > MAX_EXPORT_BIN_BYTES {
        return Err(too_large(EXPORT_BIN, bin_len as u64, MAX_EXPORT_BIN_BYTES));
    }
    let mut bin = Vec::with_capacity(bin_len);
    bin.extend_from_slice(EXPORT_HEADER);
    export.encode(&mut bin).map_err(|e| ExportError::Protobuf {
        what: "TemporaryExposureKeyExport",
        detail: e.to_string(),
    })?;

    let signatures = proto::TekSignatureList {
        signatures: vec![proto::TekSignature {
            signature_info: Some(signature_info),
            batch_num: Some(batch.batch_num),
            batch_size: Some(batch.batch_size),
            signature: Some(Bytes::from(key.sign_der(&bin))),
        }],
    };
    let sig = signatures.encode_to_vec();

    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut out = ZipWriter::new(Cursor::new(Vec::with_capacity(bin.len() / 2 + 1024)));
    for (name, data) in [(EXPORT_BIN, &bin[..]), (EXPORT_SIG, &sig[..])] {
        out.start_file(name, options).map_err(zip_error)?;
        out.write_all(data).map_err(zip_error)?;
    }
    Ok(out.finish().map_err(zip_error)?.into_inner())
}

/// An export whose structure has been checked but whose signature has not.
///
/// Get the keys with [`UnverifiedExport::verify`]; [`UnverifiedExport::batch_unverified`]
/// is for inspection tools only (the content may be forged).
#[derive(Clone)]
pub struct UnverifiedExport {
    /// The exact `export.bin` bytes, header included: what the signatures cover.
    bin: Bytes,
    batch: ExportBatch,
    /// The `signature_info` of each ECDSA-SHA256 signature of `export.sig`.
    infos: Vec<SignatureInfo>,
    /// The DER signatures, in the same order as `infos`.
    signatures: Vec<Bytes>,
}

/// Lengths only: `export.bin` may be megabytes, and is not worth a log line.
impl std::fmt::Debug for UnverifiedExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedExport")
            .field("export_bin_len", &self.bin.len())
            .field("region", &self.batch.region)
            .field("keys", &self.batch.keys.len())
            .field("revised_keys", &self.batch.revised_keys.len())
            .field("signature_infos", &self.infos)
            .finish_non_exhaustive()
    }
}

impl UnverifiedExport {
    /// The batch, if at least one signature of `export.sig` verifies with `key` over the
    /// exact `export.bin` bytes; otherwise [`SignatureError::Mismatch`] (also when the
    /// list holds no ECDSA-SHA256 signature at all).
    pub fn verify(self, key: &PublicKey) -> Result<ExportBatch> {
        if self.signatures.is_empty() {
            return Err(SignatureError::Mismatch.into());
        }
        let digest: [u8; 32] = Sha256::digest(&self.bin).into();
        let verified = self
            .signatures
            .iter()
            .any(|der| key.verify_der_prehashed(&digest, der).is_ok());
        if verified {
            Ok(self.batch)
        } else {
            Err(SignatureError::Mismatch.into())
        }
    }

    /// The parsed batch, **not yet authenticated**: for display and debugging only.
    pub fn batch_unverified(&self) -> &ExportBatch {
        &self.batch
    }

    /// The `signature_info` of each ECDSA-SHA256 signature in `export.sig`, in file
    /// order, so a caller can pick the public key named by id and version. Signatures
    /// labelled with another algorithm are left out (they can never verify here).
    pub fn signature_infos(&self) -> &[SignatureInfo] {
        &self.infos
    }

    /// The exact bytes of `export.bin`, header included.
    pub fn export_bin(&self) -> &[u8] {
        &self.bin
    }
}

/// Parse a GAEN export zip without checking its signature (see [`UnverifiedExport`]).
///
/// Errors ([`Error::Export`] unless noted):
/// [`ExportError::TooLarge`] for an archive, entry or string above the module limits;
/// [`ExportError::Zip`] for bytes that are not a readable zip (truncated, corrupt, bad
/// CRC, encrypted or unsupported compression);
/// [`ExportError::Entries`] unless the entries are exactly `export.bin` and `export.sig`
/// (an extra, missing or duplicated name);
/// [`ExportError::Header`] if `export.bin` does not start with [`EXPORT_HEADER`];
/// [`ExportError::Protobuf`] for a message that does not decode;
/// [`ExportError::Field`] for a bad batch number/size or timestamps;
/// [`ExportError::Key`] for a key that breaks the format (`key_data` not 16 bytes,
/// missing or negative start interval, rolling period not in `1..=144`).
pub fn parse_export_zip(zip: &[u8]) -> Result<UnverifiedExport> {
    parse_with_limits(zip, &Limits::DEFAULT)
}

/// Parse and verify in one step: the batch of `zip` if a signature verifies with `key`.
pub fn read_verified_export(zip: &[u8], key: &PublicKey) -> Result<ExportBatch> {
    parse_export_zip(zip)?.verify(key)
}

/// Size limits of the reader (the constants, or smaller ones in tests).
struct Limits {
    zip: u64,
    bin: u64,
    sig: u64,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        zip: MAX_ZIP_BYTES,
        bin: MAX_EXPORT_BIN_BYTES,
        sig: MAX_EXPORT_SIG_BYTES,
    };
}

fn parse_with_limits(zip: &[u8], limits: &Limits) -> Result<UnverifiedExport> {
    if zip.len() as u64 > limits.zip {
        return Err(too_large("export zip", zip.len() as u64, limits.zip));
    }
    check_entry_count(zip)?;
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(zip_error)?;
    check_entries(&archive)?;
    let bin = Bytes::from(read_entry(&mut archive, EXPORT_BIN, limits.bin)?);
    let sig = Bytes::from(read_entry(&mut archive, EXPORT_SIG, limits.sig)?);

    if bin.get(..EXPORT_HEADER.len()) != Some(&EXPORT_HEADER[..]) {
        return Err(ExportError::Header.into());
    }
    let export = proto::TemporaryExposureKeyExport::decode(bin.slice(EXPORT_HEADER.len()..))
        .map_err(|e| protobuf_error("TemporaryExposureKeyExport", e))?;
    let batch = batch_from_proto(export)?;

    let list =
        proto::TekSignatureList::decode(sig).map_err(|e| protobuf_error("TEKSignatureList", e))?;
    let mut infos = Vec::with_capacity(list.signatures.len());
    let mut signatures = Vec::with_capacity(list.signatures.len());
    for s in list.signatures {
        let info = s.signature_info.unwrap_or_default();
        if info
            .signature_algorithm
            .as_deref()
            .is_some_and(|alg| alg != SIGNATURE_ALGORITHM)
        {
            continue;
        }
        let info = info_from_proto(info)?;
        if let Some(der) = s.signature {
            infos.push(info);
            signatures.push(der);
        }
    }
    Ok(UnverifiedExport {
        bin,
        batch,
        infos,
        signatures,
    })
}

/// Refuse, before the zip parser allocates anything, a zip that announces more than
/// [`MAX_ZIP_ENTRIES`] entries or uses ZIP64.
///
/// The parser looks for its end-of-central-directory record (EOCD: signature `PK\x05\x06`,
/// 22 bytes plus a comment of up to 64 KiB) among the last 65,558 bytes, trying candidates
/// from the end and falling back to earlier ones when one does not work out. So every
/// candidate in that window it could accept is checked here:
///
/// * a candidate preceded by a ZIP64 locator (`PK\x06\x07`, 20 bytes before it) would make
///   the parser read a 64-bit entry count: refused, since an export is far below every
///   ZIP64 threshold;
/// * a single-disk candidate (disk numbers 0, the same count on this disk and in total, as
///   the parser itself requires) must announce at most [`MAX_ZIP_ENTRIES`].
///
/// Candidates that fail the parser's own single-disk check are left alone: they are stray
/// bytes the parser skips too, and refusing them would refuse about one valid export in
/// 65,000 whose compressed data happens to contain the signature.
fn check_entry_count(zip: &[u8]) -> Result<()> {
    const EOCD: [u8; 4] = *b"PK\x05\x06";
    const ZIP64_LOCATOR: [u8; 4] = *b"PK\x06\x07";
    const EOCD_LEN: usize = 22;
    const LOCATOR_LEN: usize = 20;
    const WINDOW: usize = EOCD_LEN + 4 + (1 << 16);
    let u16_at = |at: usize| {
        zip.get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let Some(last) = zip.len().checked_sub(EOCD_LEN) else {
        return Ok(()); // Too short to be a zip: the parser says so.
    };
    for p in (zip.len().saturating_sub(WINDOW)..=last).rev() {
        if zip.get(p..p + 4) != Some(&EOCD[..]) {
            continue;
        }
        let locator = p.checked_sub(LOCATOR_LEN).and_then(|l| zip.get(l..l + 4));
        if locator == Some(&ZIP64_LOCATOR[..]) {
            return Err(ExportError::Entries(vec![
                "a ZIP64 directory (an export has 2 entries and never needs one)".to_owned(),
            ])
            .into());
        }
        let (disk, cd_disk, on_disk, total) =
            (u16_at(p + 4), u16_at(p + 6), u16_at(p + 8), u16_at(p + 10));
        if disk == 0 && cd_disk == 0 && on_disk == total && total > MAX_ZIP_ENTRIES {
            return Err(ExportError::Entries(vec![format!(
                "{total} entries announced (an export has 2; more than {MAX_ZIP_ENTRIES} are \
                 refused unread)"
            )])
            .into());
        }
    }
    Ok(())
}

/// Exactly two entries, named `export.bin` and `export.sig`.
fn check_entries(archive: &ZipArchive<Cursor<&[u8]>>) -> Result<()> {
    let names: Vec<&[u8]> = archive.file_names_raw().collect();
    let exact = !archive.has_duplicate_names()
        && names.len() == 2
        && names.contains(&EXPORT_BIN.as_bytes())
        && names.contains(&EXPORT_SIG.as_bytes());
    if exact {
        return Ok(());
    }
    const SHOWN: usize = 8;
    let mut found: Vec<String> = names
        .iter()
        .take(SHOWN)
        .map(|n| String::from_utf8_lossy(&n[..n.len().min(64)]).into_owned())
        .collect();
    if names.len() > SHOWN {
        found.push(format!("... {} more", names.len() - SHOWN));
    }
    if archive.has_duplicate_names() {
        found.push("(and duplicated names)".to_owned());
    }
    Err(ExportError::Entries(found).into())
}

/// Inflate one entry, refusing a declared or actual size above `limit`.
fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: u64,
) -> Result<Vec<u8>> {
    let file = archive.by_name(name).map_err(zip_error)?;
    let declared = file.size();
    if declared > limit {
        return Err(too_large(name, declared, limit));
    }
    let capacity = declared.min(INITIAL_READ_CAPACITY) as usize;
    let mut data = Vec::with_capacity(capacity);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(zip_error)?;
    if data.len() as u64 > limit {
        return Err(too_large(name, data.len() as u64, limit));
    }
    Ok(data)
}

fn batch_from_proto(export: proto::TemporaryExposureKeyExport) -> Result<ExportBatch> {
    let start_timestamp = export.start_timestamp.unwrap_or(0);
    let end_timestamp = export.end_timestamp.unwrap_or(0);
    let region = export.region.unwrap_or_default();
    let batch_num = export.batch_num.unwrap_or(1);
    let batch_size = export.batch_size.unwrap_or(1);
    check_batch_fields(
        start_timestamp,
        end_timestamp,
        &region,
        batch_num,
        batch_size,
    )?;
    // The signature_infos inside export.bin only repeat those of export.sig; the ones
    // that matter are read from export.sig, but they are still bounded.
    for info in export.signature_infos {
        info_from_proto(info)?;
    }
    Ok(ExportBatch {
        start_timestamp,
        end_timestamp,
        region,
        batch_num,
        batch_size,
        keys: keys_from_proto(export.keys, "")?,
        revised_keys: keys_from_proto(export.revised_keys, "revised key: ")?,
    })
}

fn check_batch_fields(
    start: u64,
    end: u64,
    region: &str,
    batch_num: i32,
    batch_size: i32,
) -> Result<()> {
    check_string("region", region)?;
    if batch_size < 1 {
        return Err(field_error("batch_size", format!("{batch_size} < 1")));
    }
    if !(1..=batch_size).contains(&batch_num) {
        return Err(field_error(
            "batch_num",
            format!("{batch_num} not in 1..={batch_size}"),
        ));
    }
    if start > end {
        return Err(field_error(
            "start_timestamp",
            format!("{start} after end_timestamp {end}"),
        ));
    }
    Ok(())
}

fn info_from_proto(info: proto::SignatureInfo) -> Result<SignatureInfo> {
    let verification_key_version = info.verification_key_version.unwrap_or_default();
    let verification_key_id = info.verification_key_id.unwrap_or_default();
    check_string("verification_key_version", &verification_key_version)?;
    check_string("verification_key_id", &verification_key_id)?;
    Ok(SignatureInfo {
        verification_key_version,
        verification_key_id,
    })
}

fn keys_from_proto(keys: Vec<proto::TemporaryExposureKey>, list: &str) -> Result<Vec<ExportKey>> {
    keys.into_iter()
        .enumerate()
        .map(|(index, k)| {
            key_from_proto(k).map_err(|detail| {
                Error::from(ExportError::Key {
                    index,
                    detail: format!("{list}{detail}"),
                })
            })
        })
        .collect()
}

fn key_from_proto(k: proto::TemporaryExposureKey) -> std::result::Result<ExportKey, String> {
    let key_data = match k.key_data {
        Some(d) => <[u8; 16]>::try_from(&d[..])
            .map_err(|_| format!("key_data must be 16 bytes, got {}", d.len()))?,
        None => return Err("missing key_data".to_owned()),
    };
    let rsin = k
        .rolling_start_interval_number
        .ok_or("missing rolling_start_interval_number")?;
    let rolling_start_interval_number = u32::try_from(rsin)
        .map_err(|_| format!("negative rolling_start_interval_number {rsin}"))?;
    let period = k.rolling_period.unwrap_or(DEFAULT_ROLLING_PERIOD as i32);
    let rolling_period = u32::try_from(period)
        .ok()
        .and_then(|p| RollingPeriod::new(p).ok())
        .ok_or_else(|| format!("rolling_period {period} not in 1..=144"))?
        .get();
    Ok(ExportKey {
        key_data,
        rolling_start_interval_number,
        rolling_period,
        transmission_risk_level: k.transmission_risk_level.unwrap_or(0),
        report_type: k.report_type,
        days_since_onset_of_symptoms: k.days_since_onset_of_symptoms,
    })
}

fn keys_to_proto(keys: &[ExportKey], list: &str) -> Result<Vec<proto::TemporaryExposureKey>> {
    keys.iter()
        .enumerate()
        .map(|(index, k)| {
            let key_error = |detail: String| {
                Error::from(ExportError::Key {
                    index,
                    detail: format!("{list}: {detail}"),
                })
            };
            let rsin = i32::try_from(k.rolling_start_interval_number).map_err(|_| {
                key_error(format!(
                    "rolling_start_interval_number {} above i32::MAX",
                    k.rolling_start_interval_number
                ))
            })?;
            let period = RollingPeriod::new(k.rolling_period).map_err(|_| {
                key_error(format!(
                    "rolling_period {} not in 1..=144",
                    k.rolling_period
                ))
            })?;
            Ok(proto::TemporaryExposureKey {
                key_data: Some(Bytes::copy_from_slice(&k.key_data)),
                transmission_risk_level: Some(k.transmission_risk_level),
                rolling_start_interval_number: Some(rsin),
                rolling_period: Some(period.into()),
                report_type: k.report_type,
                days_since_onset_of_symptoms: k.days_since_onset_of_symptoms,
            })
        })
        .collect()
}

fn check_string(what: &'static str, s: &str) -> Result<()> {
    if s.len() > MAX_STRING_FIELD_BYTES {
        return Err(too_large(
            what,
            s.len() as u64,
            MAX_STRING_FIELD_BYTES as u64,
        ));
    }
    Ok(())
}

fn too_large(what: &'static str, size: u64, limit: u64) -> Error {
    ExportError::TooLarge { what, size, limit }.into()
}

fn field_error(what: &'static str, detail: String) -> Error {
    ExportError::Field { what, detail }.into()
}

fn protobuf_error(what: &'static str, e: prost::DecodeError) -> Error {
    ExportError::Protobuf {
        what,
        detail: e.to_string(),
    }
    .into()
}

fn zip_error(e: impl std::fmt::Display) -> Error {
    ExportError::Zip(e.to_string()).into()
}

/// The export file messages (proto2), as in PROTOCOL.md §9.1.
mod proto {
    use prost::bytes::Bytes;

    /// `TemporaryExposureKeyExport`, the body of `export.bin`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TemporaryExposureKeyExport {
        #[prost(fixed64, optional, tag = "1")]
        pub start_timestamp: Option<u64>,
        #[prost(fixed64, optional, tag = "2")]
        pub end_timestamp: Option<u64>,
        #[prost(string, optional, tag = "3")]
        pub region: Option<String>,
        #[prost(int32, optional, tag = "4")]
        pub batch_num: Option<i32>,
        #[prost(int32, optional, tag = "5")]
        pub batch_size: Option<i32>,
        #[prost(message, repeated, tag = "6")]
        pub signature_infos: Vec<SignatureInfo>,
        #[prost(message, repeated, tag = "7")]
        pub keys: Vec<TemporaryExposureKey>,
        #[prost(message, repeated, tag = "8")]
        pub revised_keys: Vec<TemporaryExposureKey>,
    }

    /// `SignatureInfo` (fields 1 and 2 are reserved).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignatureInfo {
        #[prost(string, optional, tag = "3")]
        pub verification_key_version: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub verification_key_id: Option<String>,
        #[prost(string, optional, tag = "5")]
        pub signature_algorithm: Option<String>,
    }

    /// `TemporaryExposureKey`. `key_data` is a [`Bytes`] so that decoding from a `Bytes`
    /// buffer slices it instead of allocating per key.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TemporaryExposureKey {
        #[prost(bytes = "bytes", optional, tag = "1")]
        pub key_data: Option<Bytes>,
        #[prost(int32, optional, tag = "2")]
        pub transmission_risk_level: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub rolling_start_interval_number: Option<i32>,
        #[prost(int32, optional, tag = "4", default = "144")]
        pub rolling_period: Option<i32>,
        /// `ReportType` enum; read as its `int32` wire value.
        #[prost(int32, optional, tag = "5")]
        pub report_type: Option<i32>,
        #[prost(sint32, optional, tag = "6")]
        pub days_since_onset_of_symptoms: Option<i32>,
    }

    /// `TEKSignatureList`, the body of `export.sig`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TekSignatureList {
        #[prost(message, repeated, tag = "1")]
        pub signatures: Vec<TekSignature>,
    }

    /// `TEKSignature`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TekSignature {
        #[prost(message, optional, tag = "1")]
        pub signature_info: Option<SignatureInfo>,
        #[prost(int32, optional, tag = "2")]
        pub batch_num: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub batch_size: Option<i32>,
        #[prost(bytes = "bytes", optional, tag = "4")]
        pub signature: Option<Bytes>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

    const ENS_ZIP: &[u8] = include_bytes!("../tests/data/ens-testExport-2-records.zip");
    const ENS_PEM: &str = include_str!("../tests/data/ens-public.pem");
    const ENS_VECTOR: &str = include_str!("../../spec-vectors/gaen-export-ens-example.json");

    fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    fn signing_key(seed: u64) -> SigningKey {
        SigningKey::generate(&mut rng(seed))
    }

    fn info() -> SignatureInfo {
        SignatureInfo {
            verification_key_version: "v1".into(),
            verification_key_id: "228".into(),
        }
    }

    fn sample_batch(n: usize, seed: u64) -> ExportBatch {
        let mut r = rng(seed);
        let key = |i: usize, r: &mut rand_chacha::ChaCha20Rng| {
            let mut key_data = [0u8; 16];
            r.fill_bytes(&mut key_data);
            ExportKey {
                key_data,
                rolling_start_interval_number: 2_800_000 + 144 * (i as u32 % 14),
                rolling_period: [144, 1, 72][i % 3],
                transmission_risk_level: (i % 9) as i32,
                report_type: [None, Some(1), Some(5)][i % 3],
                days_since_onset_of_symptoms: [None, Some(-14), Some(3)][i % 3],
            }
        };
        ExportBatch {
            start_timestamp: 1_700_000_000,
            end_timestamp: 1_700_007_200,
            region: "CH".into(),
            batch_num: 1,
            batch_size: 1,
            keys: (0..n).map(|i| key(i, &mut r)).collect(),
            revised_keys: (0..n.min(2)).map(|i| key(i, &mut r)).collect(),
        }
    }

    fn export_err(r: Result<impl std::fmt::Debug>) -> ExportError {
        match r {
            Err(Error::Export(e)) => e,
            other => panic!("expected an export error, got {other:?}"),
        }
    }

    fn sig_err(r: Result<impl std::fmt::Debug>) -> SignatureError {
        match r {
            Err(Error::Signature(e)) => e,
            other => panic!("expected a signature error, got {other:?}"),
        }
    }

    /// The entries of a zip, in order.
    fn unzip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = ZipArchive::new(Cursor::new(zip)).expect("zip");
        (0..a.len())
            .map(|i| {
                let mut f = a.by_index(i).expect("entry");
                let mut data = Vec::new();
                f.read_to_end(&mut data).expect("read");
                (f.name().expect("name").into_owned(), data)
            })
            .collect()
    }

    /// A zip of the given entries (stored or deflated).
    fn rezip(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
        let options = SimpleFileOptions::default().compression_method(method);
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, options).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    /// A valid signed zip and its (bin, sig) entries.
    fn valid(seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let zip =
            write_export_zip(&sample_batch(5, seed), &info(), &signing_key(seed)).expect("write");
        let mut e = unzip(&zip);
        let sig = e.pop().expect("sig").1;
        let bin = e.pop().expect("bin").1;
        (zip, bin, sig)
    }

    /// export.bin with the given proto body, signed with `key`, zipped.
    fn signed_zip(export: &proto::TemporaryExposureKeyExport, key: &SigningKey) -> Vec<u8> {
        let mut bin = EXPORT_HEADER.to_vec();
        bin.extend(export.encode_to_vec());
        let sig = proto::TekSignatureList {
            signatures: vec![proto::TekSignature {
                signature: Some(key.sign_der(&bin).into()),
                ..Default::default()
            }],
        }
        .encode_to_vec();
        rezip(
            &[(EXPORT_BIN, &bin), (EXPORT_SIG, &sig)],
            CompressionMethod::Deflated,
        )
    }

    fn proto_key(key_data: &[u8]) -> proto::TemporaryExposureKey {
        proto::TemporaryExposureKey {
            key_data: Some(Bytes::copy_from_slice(key_data)),
            rolling_start_interval_number: Some(2_650_000),
            ..Default::default()
        }
    }

    fn proto_export(keys: Vec<proto::TemporaryExposureKey>) -> proto::TemporaryExposureKeyExport {
        proto::TemporaryExposureKeyExport {
            start_timestamp: Some(1),
            end_timestamp: Some(2),
            region: Some("US".into()),
            keys,
            ..Default::default()
        }
    }

    #[test]
    fn ens_example_from_a_public_server_parses_and_verifies() {
        let pk = PublicKey::from_pem(ENS_PEM).expect("pem");
        let unverified = parse_export_zip(ENS_ZIP).expect("parse");
        assert_eq!(
            unverified.signature_infos(),
            &[SignatureInfo {
                verification_key_version: "1".into(),
                verification_key_id: "some_id".into(),
            }]
        );
        let batch = unverified.verify(&pk).expect("verify");

        let vector: serde_json::Value = serde_json::from_str(ENS_VECTOR).expect("json");
        let case = &vector["cases"][0];
        assert_eq!(case["public_key_pem"].as_str(), Some(ENS_PEM));
        assert_eq!(batch.region, case["region"].as_str().expect("region"));
        assert_eq!(
            Some(batch.start_timestamp),
            case["start_timestamp"].as_u64()
        );
        assert_eq!(Some(batch.end_timestamp), case["end_timestamp"].as_u64());
        assert_eq!((batch.batch_num, batch.batch_size), (1, 1));
        assert!(batch.revised_keys.is_empty());
        let expected = case["keys"].as_array().expect("keys");
        assert_eq!(batch.keys.len(), expected.len());
        for (got, want) in batch.keys.iter().zip(expected) {
            assert_eq!(
                hex::encode(got.key_data),
                want["key_data"].as_str().expect("hex")
            );
            let field = |name: &str| want[name].as_u64().expect(name);
            assert_eq!(
                u64::from(got.rolling_start_interval_number),
                field("rolling_start_interval_number")
            );
            assert_eq!(u64::from(got.rolling_period), field("rolling_period"));
            assert_eq!(
                got.transmission_risk_level as u64,
                field("transmission_risk_level")
            );
            assert_eq!(got.report_type, None);
        }
        // The same file with our own key does not verify.
        assert_eq!(
            sig_err(read_verified_export(ENS_ZIP, &signing_key(1).public_key())),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn round_trip_write_parse_verify() {
        let key = signing_key(2);
        let batch = sample_batch(50, 2);
        let zip = write_export_zip(&batch, &info(), &key).expect("write");
        let parsed = parse_export_zip(&zip).expect("parse");
        assert_eq!(parsed.signature_infos(), &[info()]);
        assert_eq!(parsed.batch_unverified(), &batch);
        assert!(parsed.export_bin().starts_with(EXPORT_HEADER));
        let debug = format!("{parsed:?}");
        assert!(debug.contains("keys: 50") && debug.len() < 300, "{debug}");
        assert_eq!(parsed.verify(&key.public_key()).expect("verify"), batch);

        // Deterministic bytes, deflated entries with the exact names.
        assert_eq!(write_export_zip(&batch, &info(), &key).expect("write"), zip);
        let mut a = ZipArchive::new(Cursor::new(&zip[..])).expect("zip");
        for (i, name) in [EXPORT_BIN, EXPORT_SIG].iter().enumerate() {
            let f = a.by_index(i).expect("entry");
            assert_eq!(f.name().expect("name"), *name);
            assert_eq!(f.compression(), CompressionMethod::Deflated);
        }
    }

    #[test]
    fn empty_batch_round_trips() {
        let key = signing_key(3);
        let batch = ExportBatch {
            batch_num: 1,
            batch_size: 1,
            ..Default::default()
        };
        let zip = write_export_zip(&batch, &info(), &key).expect("write");
        assert_eq!(
            read_verified_export(&zip, &key.public_key()).expect("ok"),
            batch
        );
    }

    #[test]
    fn wrong_public_key_is_a_mismatch() {
        let (zip, _, _) = valid(4);
        assert_eq!(
            sig_err(read_verified_export(&zip, &signing_key(99).public_key())),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn one_flipped_byte_in_export_bin_is_a_mismatch() {
        let (_, bin, sig) = valid(5);
        let pk = signing_key(5).public_key();
        // A byte of a key's data, so the file still parses.
        let pos = bin.len() - 10;
        let mut bad = bin.clone();
        bad[pos] ^= 0x01;
        let zip = rezip(
            &[(EXPORT_BIN, &bad), (EXPORT_SIG, &sig)],
            CompressionMethod::Deflated,
        );
        let parsed = parse_export_zip(&zip).expect("still parses");
        assert_eq!(sig_err(parsed.verify(&pk)), SignatureError::Mismatch);
        // The untouched entries re-zipped differently still verify: the signature covers
        // export.bin, not the archive.
        let zip = rezip(
            &[(EXPORT_BIN, &bin), (EXPORT_SIG, &sig)],
            CompressionMethod::Stored,
        );
        read_verified_export(&zip, &pk).expect("verifies");
    }

    #[test]
    fn any_verifying_signature_in_the_list_is_enough() {
        let key = signing_key(6);
        let (_, bin, _) = valid(6);
        let other_alg = proto::SignatureInfo {
            signature_algorithm: Some("1.2.840.113549.1.1.11".into()),
            ..Default::default()
        };
        let list = proto::TekSignatureList {
            signatures: vec![
                proto::TekSignature {
                    signature: Some(Bytes::from_static(b"not DER")),
                    ..Default::default()
                },
                proto::TekSignature {
                    signature: Some(signing_key(7).sign_der(&bin).into()),
                    ..Default::default()
                },
                proto::TekSignature {
                    signature_info: Some(other_alg),
                    signature: Some(key.sign_der(&bin).into()),
                    ..Default::default()
                },
                proto::TekSignature::default(),
            ],
        };
        let zip = |list: &proto::TekSignatureList| {
            rezip(
                &[(EXPORT_BIN, &bin), (EXPORT_SIG, &list.encode_to_vec())],
                CompressionMethod::Deflated,
            )
        };
        // None verifies (the right signature is labelled with another algorithm).
        let parsed = parse_export_zip(&zip(&list)).expect("parse");
        assert_eq!(parsed.signature_infos().len(), 2);
        assert_eq!(
            sig_err(parsed.verify(&key.public_key())),
            SignatureError::Mismatch
        );
        let mut good = list.clone();
        good.signatures.push(proto::TekSignature {
            signature: Some(key.sign_der(&bin).into()),
            ..Default::default()
        });
        read_verified_export(&zip(&good), &key.public_key()).expect("last one verifies");
        // An empty list never verifies.
        let empty = proto::TekSignatureList::default();
        assert_eq!(
            sig_err(read_verified_export(&zip(&empty), &key.public_key())),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn truncated_or_non_zip_input_is_a_zip_error() {
        let (zip, _, _) = valid(8);
        for cut in [0, 1, 4, 22, zip.len() / 2, zip.len() - 1] {
            assert!(
                matches!(
                    export_err(parse_export_zip(&zip[..cut])),
                    ExportError::Zip(_)
                ),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            export_err(parse_export_zip(b"EK Export v1    not a zip")),
            ExportError::Zip(_)
        ));
    }

    #[test]
    fn corrupted_compressed_data_is_a_zip_error() {
        // Stored entries: flipping a data byte breaks the CRC.
        let (_, bin, sig) = valid(9);
        let mut zip = rezip(
            &[(EXPORT_BIN, &bin), (EXPORT_SIG, &sig)],
            CompressionMethod::Stored,
        );
        let data_start = 30 + EXPORT_BIN.len();
        zip[data_start + 20] ^= 0xff;
        assert!(matches!(
            export_err(parse_export_zip(&zip)),
            ExportError::Zip(_)
        ));
    }

    #[test]
    fn extra_missing_duplicate_or_renamed_entries_are_entries_errors() {
        let (_, bin, sig) = valid(10);
        let cases: Vec<Vec<(&str, &[u8])>> = vec![
            vec![(EXPORT_BIN, &bin), (EXPORT_SIG, &sig), ("README", b"hi")],
            vec![(EXPORT_BIN, &bin)],
            vec![(EXPORT_SIG, &sig)],
            vec![],
            vec![("export.bin/", &bin), (EXPORT_SIG, &sig)],
            vec![("dir/export.bin", &bin), (EXPORT_SIG, &sig)],
            vec![("EXPORT.BIN", &bin), (EXPORT_SIG, &sig)],
        ];
        for entries in cases {
            let zip = rezip(&entries, CompressionMethod::Deflated);
            assert!(
                matches!(export_err(parse_export_zip(&zip)), ExportError::Entries(_)),
                "{:?}",
                entries.iter().map(|e| e.0).collect::<Vec<_>>()
            );
        }
        // Duplicate: the writer refuses duplicate names, so rename a third entry in place.
        let mut zip = rezip(
            &[
                (EXPORT_BIN, &bin),
                (EXPORT_SIG, &sig),
                ("export.bix", b"zz"),
            ],
            CompressionMethod::Stored,
        );
        let mut renamed = 0;
        for i in 0..zip.len() - 10 {
            if &zip[i..i + 10] == b"export.bix" {
                zip[i + 9] = b'n';
                renamed += 1;
            }
        }
        assert_eq!(renamed, 2, "local and central headers");
        match export_err(parse_export_zip(&zip)) {
            ExportError::Entries(found) => {
                assert!(found.iter().any(|f| f.contains("duplicate")), "{found:?}")
            }
            other => panic!("expected Entries, got {other:?}"),
        }
    }

    #[test]
    fn wrong_or_short_header_is_a_header_error() {
        let (_, bin, sig) = valid(11);
        let mut v2 = bin.clone();
        v2[11] = b'2';
        for bad in [v2, bin[..15].to_vec(), Vec::new(), bin[16..].to_vec()] {
            let zip = rezip(
                &[(EXPORT_BIN, &bad), (EXPORT_SIG, &sig)],
                CompressionMethod::Deflated,
            );
            assert_eq!(export_err(parse_export_zip(&zip)), ExportError::Header);
        }
    }

    #[test]
    fn bad_protobuf_is_a_protobuf_error() {
        let (_, bin, sig) = valid(12);
        let mut bad_bin = bin[..16].to_vec();
        bad_bin.extend_from_slice(&[0x3a, 0x7f, 0x01]); // field 7, length 127, 1 byte
        let zip = rezip(
            &[(EXPORT_BIN, &bad_bin), (EXPORT_SIG, &sig)],
            CompressionMethod::Deflated,
        );
        assert!(matches!(
            export_err(parse_export_zip(&zip)),
            ExportError::Protobuf {
                what: "TemporaryExposureKeyExport",
                ..
            }
        ));
        let zip = rezip(
            &[(EXPORT_BIN, &bin), (EXPORT_SIG, &[0x0a, 0x05])],
            CompressionMethod::Deflated,
        );
        assert!(matches!(
            export_err(parse_export_zip(&zip)),
            ExportError::Protobuf {
                what: "TEKSignatureList",
                ..
            }
        ));
        // A region that is not UTF-8.
        let mut bad_region = bin[..16].to_vec();
        bad_region.extend_from_slice(&[0x1a, 0x02, 0xc3, 0x28]);
        let zip = rezip(
            &[(EXPORT_BIN, &bad_region), (EXPORT_SIG, &sig)],
            CompressionMethod::Deflated,
        );
        assert!(matches!(
            export_err(parse_export_zip(&zip)),
            ExportError::Protobuf { .. }
        ));
    }

    #[test]
    fn key_data_of_15_bytes_is_a_key_error() {
        let key = signing_key(13);
        let export = proto_export(vec![proto_key(&[7; 16]), proto_key(&[7; 15])]);
        match export_err(parse_export_zip(&signed_zip(&export, &key))) {
            ExportError::Key { index, detail } => {
                assert_eq!(index, 1);
                assert!(detail.contains("16 bytes"), "{detail}");
            }
            other => panic!("expected Key, got {other:?}"),
        }
    }

    #[test]
    fn key_field_rules() {
        let key = signing_key(14);
        let parse = |k: proto::TemporaryExposureKey| {
            parse_export_zip(&signed_zip(&proto_export(vec![k]), &key))
        };
        // Absent rolling period means 144; absent risk level means 0.
        let batch = parse(proto_key(&[1; 16]))
            .expect("ok")
            .verify(&key.public_key());
        let k = &batch.expect("verified").keys[0];
        assert_eq!((k.rolling_period, k.transmission_risk_level), (144, 0));
        assert_eq!(k.rolling_start_interval_number, 2_650_000);

        let mut bad = Vec::new();
        for period in [0, 145, -1] {
            bad.push(proto::TemporaryExposureKey {
                rolling_period: Some(period),
                ..proto_key(&[1; 16])
            });
        }
        bad.push(proto::TemporaryExposureKey {
            rolling_start_interval_number: Some(-5),
            ..proto_key(&[1; 16])
        });
        bad.push(proto::TemporaryExposureKey {
            rolling_start_interval_number: None,
            ..proto_key(&[1; 16])
        });
        bad.push(proto::TemporaryExposureKey {
            key_data: None,
            ..proto_key(&[1; 16])
        });
        bad.push(proto_key(&[1; 17]));
        for k in bad {
            assert!(
                matches!(
                    export_err(parse(k.clone())),
                    ExportError::Key { index: 0, .. }
                ),
                "{k:?}"
            );
        }
        // Revised keys are checked as well and say so.
        let export = proto::TemporaryExposureKeyExport {
            revised_keys: vec![proto_key(&[1; 3])],
            ..proto_export(vec![])
        };
        match export_err(parse_export_zip(&signed_zip(&export, &key))) {
            ExportError::Key { detail, .. } => assert!(detail.contains("revised"), "{detail}"),
            other => panic!("expected Key, got {other:?}"),
        }
    }

    #[test]
    fn header_field_rules() {
        let key = signing_key(15);
        let cases = [
            proto::TemporaryExposureKeyExport {
                batch_num: Some(2),
                batch_size: Some(1),
                ..proto_export(vec![])
            },
            proto::TemporaryExposureKeyExport {
                batch_num: Some(0),
                ..proto_export(vec![])
            },
            proto::TemporaryExposureKeyExport {
                batch_size: Some(-3),
                ..proto_export(vec![])
            },
            proto::TemporaryExposureKeyExport {
                start_timestamp: Some(10),
                end_timestamp: Some(9),
                ..proto_export(vec![])
            },
        ];
        for export in cases {
            assert!(matches!(
                export_err(parse_export_zip(&signed_zip(&export, &key))),
                ExportError::Field { .. }
            ));
        }
        let long_region = proto::TemporaryExposureKeyExport {
            region: Some("x".repeat(MAX_STRING_FIELD_BYTES + 1)),
            ..proto_export(vec![])
        };
        assert!(matches!(
            export_err(parse_export_zip(&signed_zip(&long_region, &key))),
            ExportError::TooLarge { what: "region", .. }
        ));
        // Absent batch fields default to 1 of 1.
        let batch =
            read_verified_export(&signed_zip(&proto_export(vec![]), &key), &key.public_key())
                .expect("ok");
        assert_eq!((batch.batch_num, batch.batch_size), (1, 1));
    }

    #[test]
    fn writer_refuses_what_the_reader_would_refuse() {
        let key = signing_key(16);
        let mut batch = sample_batch(3, 16);
        batch.keys[2].rolling_period = 0;
        assert!(matches!(
            export_err(write_export_zip(&batch, &info(), &key)),
            ExportError::Key { index: 2, .. }
        ));
        let mut batch = sample_batch(3, 16);
        batch.revised_keys[0].rolling_start_interval_number = u32::MAX;
        assert!(matches!(
            export_err(write_export_zip(&batch, &info(), &key)),
            ExportError::Key { index: 0, .. }
        ));
        let mut batch = sample_batch(3, 16);
        batch.region = "r".repeat(MAX_STRING_FIELD_BYTES + 1);
        assert!(matches!(
            export_err(write_export_zip(&batch, &info(), &key)),
            ExportError::TooLarge { what: "region", .. }
        ));
        let mut batch = sample_batch(3, 16);
        batch.batch_num = 0;
        assert!(matches!(
            export_err(write_export_zip(&batch, &info(), &key)),
            ExportError::Field {
                what: "batch_num",
                ..
            }
        ));
        let long_info = SignatureInfo {
            verification_key_id: "i".repeat(MAX_STRING_FIELD_BYTES + 1),
            ..info()
        };
        assert!(matches!(
            export_err(write_export_zip(&sample_batch(1, 16), &long_info, &key)),
            ExportError::TooLarge { .. }
        ));
    }

    #[test]
    fn oversized_entries_are_too_large() {
        // Actual size: a highly compressible export.bin above a (test-sized) limit.
        let limits = Limits {
            zip: MAX_ZIP_BYTES,
            bin: 4096,
            sig: 256,
        };
        let (_, bin, sig) = valid(17);
        let mut bomb = bin.clone();
        bomb.resize(1024 * 1024, 0);
        let zip = rezip(
            &[(EXPORT_BIN, &bomb), (EXPORT_SIG, &sig)],
            CompressionMethod::Deflated,
        );
        assert!(zip.len() < 8 * 1024, "compresses well");
        assert_eq!(
            export_err(parse_with_limits(&zip, &limits)),
            ExportError::TooLarge {
                what: EXPORT_BIN,
                size: 1024 * 1024,
                limit: 4096
            }
        );
        let big_sig = vec![0u8; 257];
        let zip = rezip(
            &[(EXPORT_BIN, &bin), (EXPORT_SIG, &big_sig)],
            CompressionMethod::Deflated,
        );
        assert!(matches!(
            export_err(parse_with_limits(&zip, &limits)),
            ExportError::TooLarge {
                what: EXPORT_SIG,
                ..
            }
        ));
        // The whole archive.
        let small = Limits { zip: 100, ..limits };
        assert!(matches!(
            export_err(parse_with_limits(&valid(17).0, &small)),
            ExportError::TooLarge {
                what: "export zip",
                ..
            }
        ));
    }

    #[test]
    fn declared_size_above_the_limit_is_refused_before_inflating() {
        // Patch the central directory's uncompressed size of export.bin to 100 MiB.
        let (zip, _, _) = valid(18);
        let mut zip = zip;
        let cd = (0..zip.len() - 4)
            .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x01, 0x02])
            .expect("central directory");
        zip[cd + 24..cd + 28].copy_from_slice(&(100u32 << 20).to_le_bytes());
        assert_eq!(
            export_err(parse_export_zip(&zip)),
            ExportError::TooLarge {
                what: EXPORT_BIN,
                size: 100 << 20,
                limit: MAX_EXPORT_BIN_BYTES
            }
        );
    }

    #[test]
    fn large_export_round_trips() {
        let key = signing_key(19);
        let batch = sample_batch(10_000, 19);
        let zip = write_export_zip(&batch, &info(), &key).expect("write");
        let got = read_verified_export(&zip, &key.public_key()).expect("read");
        assert_eq!(got.keys.len(), 10_000);
        assert_eq!(got, batch);
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_export_zip(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_zips(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let (mut zip, _, _) = valid(20);
            for (pos, byte) in edits {
                let p = pos % zip.len();
                zip[p] = byte;
            }
            let _ = parse_export_zip(&zip);
            zip.truncate(cut % (zip.len() + 1));
            let _ = parse_export_zip(&zip);
        }

        #[test]
        fn parse_never_panics_on_mutated_export_bin(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            // Mutations inside the deflated data rarely reach the protobuf decoder, so
            // mutate export.bin itself and re-zip it.
            let (_, mut bin, sig) = valid(21);
            for (pos, byte) in edits {
                let p = pos % bin.len();
                bin[p] = byte;
            }
            let zip = rezip(&[(EXPORT_BIN, &bin), (EXPORT_SIG, &sig)], CompressionMethod::Stored);
            if let Ok(parsed) = parse_export_zip(&zip) {
                let _ = parsed.verify(&signing_key(21).public_key());
            }
        }
    }
}
