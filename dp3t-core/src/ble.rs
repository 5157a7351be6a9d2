//! The Bluetooth LE advertisement of the DP-3T designs (docs/PROTOCOL.md §12).
//!
//! Phones that run GAEN do not advertise anything themselves: the OS broadcasts the
//! Exposure Notification service (16-bit UUID 0xFD6F, RPI + AEM as service data). Phones
//! that run one of the three DP-3T designs have to advertise their EphID from the app,
//! and two apps only hear each other if they agree on the bytes. This module fixes them
//! to the layout of the DP-3T prestandard SDKs, so an app built on this library and one
//! built on those SDKs are interoperable:
//!
//! * service UUID **0xFD68** (a 16-bit UUID registered with the Bluetooth SIG by Ubique,
//!   the SDKs' developer), listed in a "Complete List of 16-bit Service UUIDs" AD
//!   structure so that background scanners filtering on it see the phone;
//! * the 16-byte **EphID as service data** of 0xFD68 ("Service Data - 16-bit UUID" AD
//!   structure: length `0x13`, type `0x16`, UUID little-endian `68 FD`, 16 bytes);
//! * iOS cannot put service data into a background advertisement, so an iOS phone also
//!   serves the EphID as the value of the readable GATT characteristic
//!   [`GATT_CHARACTERISTIC_UUID`] of the 0xFD68 service, and scanners connect and read
//!   it when an advertisement carries the UUID but no service data.
//!
//! The rest of an advertisement (flags, TX power level, which the Android SDK includes)
//! is the Bluetooth stack's business and is skipped when parsing.

use crate::error::{BleError, Error, Result};

/// The 16-bit service UUID of DP-3T beacons.
pub const SERVICE_UUID16: u16 = 0xFD68;
/// [`SERVICE_UUID16`] in its 128-bit form (Bluetooth base UUID).
pub const SERVICE_UUID: &str = "0000FD68-0000-1000-8000-00805F9B34FB";
/// The GATT characteristic (in the 0xFD68 service) whose value is the current EphID,
/// for phones that cannot advertise service data (iOS in the background).
pub const GATT_CHARACTERISTIC_UUID: &str = "8C8494E3-BAB5-1848-40A0-1B06991C0001";
/// The 16-bit UUID of the OS Exposure Notification service, advertised by the OS on
/// GAEN phones (not by the app).
pub const GAEN_SERVICE_UUID16: u16 = 0xFD6F;

/// AD type "Complete List of 16-bit Service Class UUIDs".
const AD_COMPLETE_UUID16: u8 = 0x03;
/// AD type "Incomplete List of 16-bit Service Class UUIDs".
const AD_INCOMPLETE_UUID16: u8 = 0x02;
/// AD type "Service Data - 16-bit UUID".
const AD_SERVICE_DATA16: u8 = 0x16;

/// What a DP-3T phone advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertisement {
    /// The EphID, sent as service data of 0xFD68.
    pub ephid: [u8; 16],
}

impl Advertisement {
    /// The advertisement of a DP-3T beacon payload (16 bytes; a 20-byte GAEN payload is
    /// refused: the OS advertises those).
    pub fn for_payload(payload: &[u8]) -> Result<Self> {
        Ok(Advertisement {
            ephid: crate::fixed(payload, "DP-3T beacon payload (EphID)")?,
        })
    }

    /// The AD structures: the 16-bit service UUID list, then the service data.
    /// 24 bytes: `03 03 68 FD 13 16 68 FD <EphID>`.
    pub fn to_ad_bytes(&self) -> Vec<u8> {
        let [lo, hi] = SERVICE_UUID16.to_le_bytes();
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&[3, AD_COMPLETE_UUID16, lo, hi]);
        out.extend_from_slice(&[19, AD_SERVICE_DATA16, lo, hi]);
        out.extend_from_slice(&self.ephid);
        out
    }
}

/// The EphID in received advertising data (a scan record's AD structures, in any order,
/// with any others among them). A zero length byte ends the data (the padding of a
/// 31-byte legacy advertisement).
///
/// Errors ([`Error::Ble`]): [`BleError::Truncated`] if a structure runs past the end,
/// [`BleError::NotDp3t`] if there is no 0xFD68 service data,
/// [`BleError::ServiceDataLength`] if the 0xFD68 service data is not 16 bytes,
/// [`BleError::UuidOnly`] if the UUID is listed but no service data came (an iOS phone:
/// read the GATT characteristic).
pub fn parse_advertisement(bytes: &[u8]) -> Result<[u8; 16]> {
    let uuid = SERVICE_UUID16.to_le_bytes();
    let mut listed = false;
    let mut i = 0;
    while i < bytes.len() {
        let len = usize::from(bytes[i]);
        if len == 0 {
            break;
        }
        let Some(structure) = bytes.get(i + 1..i + 1 + len) else {
            return Err(Error::Ble(BleError::Truncated { offset: i }));
        };
        let (ad_type, data) = (structure[0], &structure[1..]);
        match ad_type {
            AD_SERVICE_DATA16 if data.len() >= 2 && data[..2] == uuid => {
                let payload = &data[2..];
                return payload
                    .try_into()
                    .map_err(|_| Error::Ble(BleError::ServiceDataLength(payload.len())));
            }
            AD_COMPLETE_UUID16 | AD_INCOMPLETE_UUID16 => {
                listed |= data.chunks_exact(2).any(|c| c == uuid);
            }
            _ => {}
        }
        i += 1 + len;
    }
    Err(Error::Ble(if listed {
        BleError::UuidOnly
    } else {
        BleError::NotDp3t
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spec-vectors/ble/advertisement.json`: the format, checked both ways.
    #[test]
    fn vector_file() {
        let text = include_str!("../../spec-vectors/ble/advertisement.json");
        let v: serde_json::Value = serde_json::from_str(text).expect("vector file is JSON");
        assert_eq!(v["serviceUuid16"], "FD68");
        assert_eq!(v["serviceUuid"], SERVICE_UUID);
        assert_eq!(v["gattCharacteristicUuid"], GATT_CHARACTERISTIC_UUID);
        let valid = v["valid"].as_array().expect("valid cases");
        let invalid = v["invalid"].as_array().expect("invalid cases");
        assert!(valid.len() >= 3 && invalid.len() >= 5);
        for case in valid {
            let ephid = hex::decode(case["ephid"].as_str().expect("ephid")).expect("hex");
            let ad = hex::decode(case["adBytes"].as_str().expect("adBytes")).expect("hex");
            assert_eq!(parse_advertisement(&ad).expect("parses").to_vec(), ephid);
            if case["encoded"].as_bool() == Some(true) {
                let a = Advertisement::for_payload(&ephid).expect("16 bytes");
                assert_eq!(a.to_ad_bytes(), ad, "{}", case["name"]);
            }
        }
        for case in invalid {
            let ad = hex::decode(case["adBytes"].as_str().expect("adBytes")).expect("hex");
            let err = parse_advertisement(&ad).expect_err("must be refused");
            let expected = case["error"].as_str().expect("error");
            let got = match err {
                Error::Ble(BleError::Truncated { .. }) => "truncated",
                Error::Ble(BleError::NotDp3t) => "not_dp3t",
                Error::Ble(BleError::ServiceDataLength(_)) => "service_data_length",
                Error::Ble(BleError::UuidOnly) => "uuid_only",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, expected, "{}", case["name"]);
        }
    }

    #[test]
    fn gaen_payloads_are_not_advertised_by_the_app() {
        assert!(Advertisement::for_payload(&[0; 20]).is_err());
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly() {
        // Every prefix and every one-byte corruption of a valid record.
        let ad = Advertisement { ephid: [0xAB; 16] }.to_ad_bytes();
        for n in 0..=ad.len() {
            let _ = parse_advertisement(&ad[..n]);
        }
        for i in 0..ad.len() {
            for b in [0u8, 1, 0x13, 0x16, 0xFF] {
                let mut x = ad.clone();
                x[i] = b;
                if let Ok(e) = parse_advertisement(&x) {
                    assert_eq!(e.len(), 16);
                }
            }
        }
    }
}
