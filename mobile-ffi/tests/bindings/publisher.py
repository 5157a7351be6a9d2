"""A stand-in backend for the binding tests, written from PROTOCOL.md alone.

It turns an upload body made by the library into the bytes a DP-3T backend would publish,
signed with a test key, without any of the project's Rust code: protobuf by hand, zip from
the standard library, ECDSA P-256 from the `cryptography` package. So the Python story
tests check the Rust parsers and verifiers against an independent encoder:

* GAEN: an export zip (`export.bin` = header + `TemporaryExposureKeyExport`,
  `export.sig` = `TEKSignatureList` with a DER ECDSA-SHA256 signature), §9.1;
* low-cost: a `ProtoExposedList`, §9.2; hybrid: a `HybridExposedList`, §9.3;
* unlinkable: a DPCF Cuckoo filter of `SHA-256(EphID || BE32(epoch))`, §4 and §4.1;
* for the last three, the `Signature` response header: a compact ES256 JWS whose claims
  bind the SHA-256 of the body and the batch release time, §9.5.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import struct
import zipfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

DAY_SECONDS = 86_400
RETENTION_SECONDS = 14 * DAY_SECONDS

# ------------------------------------------------------------------------------ protobuf


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def field_fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<Q", value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_str(number: int, value: str) -> bytes:
    return field_bytes(number, value.encode())


# ------------------------------------------------------------------------------ keys


class ServerKey:
    """The backend's P-256 signing key (a fresh one per test world)."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode()
        )

    def sign_der(self, message: bytes) -> bytes:
        return self.private.sign(message, ec.ECDSA(hashes.SHA256()))

    def sign_raw(self, message: bytes) -> bytes:
        """ES256 as JWS wants it: 32-byte r || 32-byte s."""
        r, s = decode_dss_signature(self.sign_der(message))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signature_header(
    body: bytes,
    key: ServerKey,
    iat: int,
    exp: int,
    release_time: int | None,
) -> str:
    """The `Signature` header of §9.5, as the DP-3T Java backend writes it."""
    claims = {
        "content-hash": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "hash-alg": "sha-256",
        "iss": "dp3t",
        "iat": iat,
        "exp": exp,
    }
    if release_time is not None:
        claims["batch-release-time"] = str(release_time * 1000)
    signing_input = (
        b64url(json.dumps({"alg": "ES256"}).encode())
        + "."
        + b64url(json.dumps(claims).encode())
    )
    return signing_input + "." + b64url(key.sign_raw(signing_input.encode()))


# ------------------------------------------------------------------------------ GAEN export

EXPORT_HEADER = b"EK Export v1    "
ECDSA_P256_SHA256 = "1.2.840.10045.4.3.2"


def signature_info() -> bytes:
    return (
        field_str(3, "v1")  # verification_key_version
        + field_str(4, "310")  # verification_key_id
        + field_str(5, ECDSA_P256_SHA256)  # signature_algorithm
    )


def gaen_export_zip(keys: list[tuple[bytes, int, int]], release: int, key: ServerKey) -> bytes:
    """An export zip of `(key_data, rolling_start_interval_number, rolling_period)`."""
    export = (
        field_fixed64(1, release - 7200)  # start_timestamp
        + field_fixed64(2, release)  # end_timestamp
        + field_str(3, "CH")  # region
        + field_varint(4, 1)  # batch_num
        + field_varint(5, 1)  # batch_size
        + field_bytes(6, signature_info())
    )
    for key_data, rsin, period in sorted(keys):  # never in upload order
        tek = (
            field_bytes(1, key_data)
            + field_varint(2, 0)  # transmission_risk_level
            + field_varint(3, rsin)
            + field_varint(4, period)
            + field_varint(5, 1)  # report_type CONFIRMED_TEST
        )
        export += field_bytes(7, tek)
    export_bin = EXPORT_HEADER + export
    tek_signature = (
        field_bytes(1, signature_info())
        + field_varint(2, 1)
        + field_varint(3, 1)
        + field_bytes(4, key.sign_der(export_bin))
    )
    export_sig = field_bytes(1, tek_signature)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("export.bin", export_bin)
        z.writestr("export.sig", export_sig)
    return out.getvalue()


# ------------------------------------------------------------------------------ DPCF filter

MASK64 = (1 << 64) - 1


def mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class CuckooFilter:
    """The DPCF filter of §4.1 (f = 48 bits, b = 4 slots per bucket)."""

    def __init__(self, items: list[bytes], f: int = 48, b: int = 4, seed: int = 1) -> None:
        self.f, self.b = f, b
        self.m = max(1, -(-len(items) * 2 // b))  # about 50 % load
        self.slots = [[0] * b for _ in range(self.m)]
        self.count = 0
        rng = random.Random(seed)
        for x in items:
            self._insert(x, rng)

    def fp(self, x: bytes) -> int:
        v = int.from_bytes(x[0:8], "big") >> (64 - self.f)
        return v or 1

    def i1(self, x: bytes) -> int:
        return int.from_bytes(x[8:16], "big") % self.m

    def alt(self, i: int, fp: int) -> int:
        return (mix64(fp) % self.m + self.m - i) % self.m

    def _put(self, i: int, fp: int) -> bool:
        bucket = self.slots[i]
        for s in range(self.b):
            if bucket[s] == 0:
                bucket[s] = fp
                return True
        return False

    def _insert(self, x: bytes, rng: random.Random) -> None:
        fp, i = self.fp(x), self.i1(x)
        self.count += 1
        if self._put(i, fp) or self._put(self.alt(i, fp), fp):
            return
        for _ in range(500):
            s = rng.randrange(self.b)
            fp, self.slots[i][s] = self.slots[i][s], fp
            i = self.alt(i, fp)
            if self._put(i, fp):
                return
        raise RuntimeError("filter too full")

    def contains(self, x: bytes) -> bool:
        fp, i = self.fp(x), self.i1(x)
        return fp in self.slots[i] or fp in self.slots[self.alt(i, fp)]

    def to_bytes(self) -> bytes:
        width = -(-self.f // 8)
        out = bytearray(b"DPCF" + bytes([1, self.f, self.b, 0]))
        out += struct.pack(">II", self.m, self.count)
        for bucket in self.slots:
            for fp in bucket:
                out += fp.to_bytes(width, "big")
        return bytes(out)


def hashed_observation(seed: bytes, epoch: int) -> bytes:
    """§4: `SHA-256(EphID || BE32(epoch))` with `EphID = SHA-256(seed)[:16]`."""
    ephid = hashlib.sha256(seed).digest()[:16]
    return hashlib.sha256(ephid + struct.pack(">I", epoch)).digest()


# ------------------------------------------------------------------------------ publishing

SCHEME_PATHS = {
    "GAEN": "/v2/gaen/exposed",
    "LOW_COST": "/v1/exposed",
    "UNLINKABLE": "/v1/unlinkable/exposed",
    "HYBRID": "/v1/hybrid/exposed",
}


def real_entries(upload_json: str, scheme: str) -> list[dict]:
    """The real (`fake == 0`) entries of an upload body."""
    body = json.loads(upload_json)
    entries = {
        "GAEN": lambda: body["gaenKeys"],
        "LOW_COST": lambda: [body],
        "UNLINKABLE": lambda: body["seeds"],
        "HYBRID": lambda: body["windows"],
    }[scheme]()
    return [e for e in entries if e["fake"] == 0]


class Published:
    """What the backend serves for one batch: body, release time, `Signature` header."""

    def __init__(self, body: bytes, release: int, header: str | None) -> None:
        self.body, self.release, self.header = body, release, header


def publish(scheme: str, upload_json: str, release: int, key: ServerKey) -> Published:
    """Publish the real entries of `upload_json` as the batch released at `release`."""
    real = real_entries(upload_json, scheme)
    if not real:
        raise AssertionError(f"{scheme} upload carries no real entry")
    d = base64.b64decode
    if scheme == "GAEN":
        keys = [(d(k["keyData"]), k["rollingStartNumber"], k["rollingPeriod"]) for k in real]
        return Published(gaen_export_zip(keys, release, key), release, None)
    if scheme == "LOW_COST":
        body = field_varint(1, release * 1000)
        for e in real:
            body += field_bytes(2, field_bytes(2, d(e["key"])) + field_varint(3, e["keyDate"]))
    elif scheme == "HYBRID":
        body = field_varint(1, release * 1000)
        for w in real:
            seed = (
                field_bytes(1, d(w["seed"]))
                + field_varint(2, w["windowStart"])
                + field_varint(3, w["windowMinutes"])
            )
            body += field_bytes(2, seed)
    elif scheme == "UNLINKABLE":
        items = [hashed_observation(d(e["seed"]), e["epoch"]) for e in real]
        cf = CuckooFilter(items)
        assert all(cf.contains(x) for x in items)
        body = cf.to_bytes()
    else:
        raise ValueError(scheme)
    header = signature_header(body, key, release, release + RETENTION_SECONDS, release)
    return Published(body, release, header)
