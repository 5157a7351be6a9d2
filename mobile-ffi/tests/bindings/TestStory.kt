// The phone story for GAEN and the DP-3T low-cost design, on the JVM, through the generated
// Kotlin bindings (JNA) of the real library: the same code an Android app calls.
//
// The "backend" here is written in plain Kotlin from PROTOCOL.md, with nothing but the JDK:
// a P-256 key (java.security), protobuf by hand, the export zip (java.util.zip), the
// ECDSA-SHA256 export signature and the ES256 `Signature` header (JWS). So the batches the
// library ingests come from a second, independent encoder (the Python test has the third).
//
// Built and run by mobile-ffi/tests/run-bindings.sh, together with the Kotlin example of
// docs/MOBILE.md (extracted to MobileGuideExample.kt), which one test below runs:
//   kotlinc TestStory.kt MobileGuideExample.kt target/bindings/kotlin/org/dp3t/mobile/... -cp jna.jar -include-runtime -d story.jar
//   java -Djna.library.path=target/bindings/kotlin -cp story.jar:jna.jar TestStoryKt

import org.dp3t.mobile.BatchKind
import org.dp3t.mobile.Dp3tException
import org.dp3t.mobile.EngineConfig
import org.dp3t.mobile.ExposureWindow
import org.dp3t.mobile.PublishedBatch
import org.dp3t.mobile.ScanInstance
import org.dp3t.mobile.Scheme
import org.dp3t.mobile.ScoringConfig
import org.dp3t.mobile.TracingEngine
import org.dp3t.mobile.UploadPayload
import org.dp3t.mobile.exposureDaysFromWindows
import org.dp3t.mobile.verifyResponseSignature
import java.io.ByteArrayOutputStream
import java.security.KeyPairGenerator
import java.security.MessageDigest
import java.security.Signature
import java.security.spec.ECGenParameterSpec
import java.util.Base64
import java.util.zip.ZipEntry
import java.util.zip.ZipOutputStream
import kotlin.system.exitProcess

/** The contact day, 2024-10-04, as a unix day number. */
const val DAY = 20_000L
val STORAGE_KEY = ByteArray(32) { it.toByte() }

fun at(day: Long, hour: Int, minute: Int = 0): ULong = (day * 86_400 + hour * 3600 + minute * 60).toULong()

// ------------------------------------------------------------------------------ the backend

/** The backend's signing key. */
class ServerKey {
    private val pair = KeyPairGenerator.getInstance("EC")
        .apply { initialize(ECGenParameterSpec("secp256r1")) }
        .generateKeyPair()

    val pem: String =
        "-----BEGIN PUBLIC KEY-----\n" +
            Base64.getMimeEncoder(64, "\n".toByteArray()).encodeToString(pair.public.encoded) +
            "\n-----END PUBLIC KEY-----\n"

    private fun sign(algorithm: String, message: ByteArray): ByteArray =
        Signature.getInstance(algorithm).run {
            initSign(pair.private)
            update(message)
            sign()
        }

    /** ECDSA-SHA256, DER: the export signature. */
    fun signDer(message: ByteArray) = sign("SHA256withECDSA", message)

    /** ECDSA-SHA256 as 32-byte r || 32-byte s: what ES256 wants. */
    fun signRaw(message: ByteArray) = sign("SHA256withECDSAinP1363Format", message)
}

/** A protobuf message written field by field. */
class Proto {
    private val out = ByteArrayOutputStream()

    private fun varint(value: Long) {
        var n = value
        while (n and 0x7FL.inv() != 0L) {
            out.write(((n and 0x7F) or 0x80).toInt())
            n = n ushr 7
        }
        out.write(n.toInt())
    }

    fun int(field: Int, value: Long) = apply { varint((field shl 3).toLong()); varint(value) }

    fun fixed64(field: Int, value: Long) = apply {
        varint(((field shl 3) or 1).toLong())
        for (i in 0 until 8) out.write(((value ushr (8 * i)) and 0xFF).toInt())
    }

    fun bytes(field: Int, value: ByteArray) = apply {
        varint(((field shl 3) or 2).toLong())
        varint(value.size.toLong())
        out.write(value)
    }

    fun string(field: Int, value: String) = bytes(field, value.toByteArray())

    fun build(): ByteArray = out.toByteArray()
}

fun b64url(data: ByteArray): String = Base64.getUrlEncoder().withoutPadding().encodeToString(data)

fun sha256(data: ByteArray): ByteArray = MessageDigest.getInstance("SHA-256").digest(data)

/** The `Signature` response header of §9.5, as the DP-3T backend writes it. */
fun signatureHeader(body: ByteArray, key: ServerKey, iat: Long, exp: Long, releaseMs: Long?): String {
    val release = if (releaseMs == null) "" else ""","batch-release-time":"$releaseMs""""
    val claims = """{"content-hash":"${Base64.getEncoder().encodeToString(sha256(body))}",""" +
        """"hash-alg":"sha-256","iss":"dp3t","iat":$iat,"exp":$exp$release}"""
    val input = b64url("""{"alg":"ES256"}""".toByteArray()) + "." + b64url(claims.toByteArray())
    return input + "." + b64url(key.signRaw(input.toByteArray()))
}

val GAEN_KEY = Regex(""""keyData":"([^"]+)","rollingStartNumber":(\d+),"rollingPeriod":(\d+),"transmissionRiskLevel":\d+,"fake":0""")
val LOWCOST_KEY = Regex(""""key":"([^"]+)","keyDate":(\d+),"fake":0""")

fun signatureInfo() = Proto()
    .string(3, "v1")
    .string(4, "310")
    .string(5, "1.2.840.10045.4.3.2")
    .build()

/** The real keys of a GAEN upload as an export zip (§9.1), signed by `key`. */
fun gaenExport(upload: UploadPayload, release: Long, key: ServerKey): ByteArray {
    val keys = GAEN_KEY.findAll(upload.json).map { it.groupValues }.toList()
    check(keys.isNotEmpty()) { "no real key in the upload" }
    val export = Proto()
        .fixed64(1, release - 7200)
        .fixed64(2, release)
        .string(3, "CH")
        .int(4, 1)
        .int(5, 1)
        .bytes(6, signatureInfo())
    for ((_, keyData, rsin, period) in keys.sortedBy { it[1] }) {
        val tek = Proto()
            .bytes(1, Base64.getDecoder().decode(keyData))
            .int(2, 0)
            .int(3, rsin.toLong())
            .int(4, period.toLong())
            .int(5, 1)
            .build()
        export.bytes(7, tek)
    }
    val bin = "EK Export v1    ".toByteArray() + export.build()
    val sig = Proto().bytes(
        1,
        Proto().bytes(1, signatureInfo()).int(2, 1).int(3, 1).bytes(4, key.signDer(bin)).build(),
    ).build()
    val zip = ByteArrayOutputStream()
    ZipOutputStream(zip).use { z ->
        z.putNextEntry(ZipEntry("export.bin")); z.write(bin); z.closeEntry()
        z.putNextEntry(ZipEntry("export.sig")); z.write(sig); z.closeEntry()
    }
    return zip.toByteArray()
}

/** A phone-side world of one scheme: the backend key and the shared config. */
class World(val scheme: Scheme) {
    val key = ServerKey()
    val config = EngineConfig(scheme = scheme, backendPublicKeyPem = key.pem)

    fun phone() = TracingEngine(config)

    fun meet(from: TracingEngine, to: TracingEngine, start: ULong, minutes: Int, attenuation: Int) {
        for (m in 0 until minutes) {
            val now = start + (60 * m).toULong()
            val beacon = from.currentBeacon(now)
            expect(beacon.validUntilUnix > now, true, "beacon valid until after now")
            to.recordSighting(beacon.payload, now, attenuation, 60u)
        }
    }

    /** The upload's real keys as the backend publishes them at `release`. */
    fun publish(upload: UploadPayload, release: ULong, signer: ServerKey = key): PublishedBatch {
        val r = release.toLong()
        return when (scheme) {
            Scheme.GAEN -> PublishedBatch(BatchKind.GAEN_EXPORT_ZIP, gaenExport(upload, r, signer), release, null)
            Scheme.LOW_COST -> {
                val list = Proto().int(1, r * 1000)
                for (m in LOWCOST_KEY.findAll(upload.json)) {
                    val (_, k, date) = m.groupValues
                    list.bytes(2, Proto().bytes(2, Base64.getDecoder().decode(k)).int(3, date.toLong()).build())
                }
                val body = list.build()
                PublishedBatch(
                    BatchKind.LOW_COST_LIST, body, release,
                    signatureHeader(body, signer, r, r + 14 * 86_400, r * 1000),
                )
            }
            else -> error("the Kotlin story covers GAEN and low-cost")
        }
    }
}

// ------------------------------------------------------------------------------ a tiny harness

var passed = 0
var failed = 0

fun test(name: String, body: () -> Unit) {
    try {
        body()
        passed++
        println("ok   $name")
    } catch (e: Throwable) {
        failed++
        println("FAIL $name: $e")
        e.printStackTrace(System.out)
    }
}

fun <T> expect(actual: T, expected: T, what: String) {
    if (actual != expected) throw AssertionError("$what: expected $expected, got $actual")
}

inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("$what: expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("$what: expected ${E::class.simpleName}, nothing was thrown")
}

fun days(engine: TracingEngine, now: ULong) =
    engine.exposureStatus(now).exposedDays.map { it.day.toLong() to it.weightedMinutes }

// ------------------------------------------------------------------------------ the story

fun story(scheme: Scheme) {
    val w = World(scheme)
    val alice = w.phone()
    val bob = w.phone()
    val carol = w.phone()
    val dave = w.phone()
    w.meet(alice, dave, at(DAY - 1, 9), 1, 80) // onset day
    w.meet(alice, bob, at(DAY, 10), 30, 45) // close, 30 minutes
    w.meet(alice, carol, at(DAY, 11), 60, 75) // far
    w.meet(alice, dave, at(DAY, 13), 5, 45) // short
    val bobSaved = bob.save(STORAGE_KEY)
    val upload = alice.buildUpload(at(DAY - 1, 0), at(DAY + 1, 10))
    val release = at(DAY + 1, 12)
    val batch = w.publish(upload, release)
    val now = at(DAY + 1, 12, 5)

    test("$scheme: beacon size") {
        expect(alice.currentBeacon(at(DAY + 1, 9)).payload.size, if (scheme == Scheme.GAEN) 20 else 16, "payload")
    }
    test("$scheme: close contact is one exposure day") {
        expect(bob.ingest(batch) > 0u, true, "new matches")
        expect(days(bob, now), listOf(DAY to 30.0), "exposure days")
        expect(bob.ingest(batch), 0u, "matches of a batch ingested again")
    }
    test("$scheme: far and short contacts are no exposure") {
        for ((who, phone) in listOf("carol" to carol, "dave" to dave)) {
            expect(phone.ingest(batch) > 0u, true, "$who matches")
            expect(days(phone, now), emptyList(), "$who exposure days")
        }
    }
    test("$scheme: a batch signed with another key is rejected") {
        val phone = TracingEngine.restore(bobSaved, STORAGE_KEY, w.config)
        expectThrows<Dp3tException.BadSignature>("forged") { phone.ingest(w.publish(upload, release, ServerKey())) }
        expect(days(phone, now), emptyList(), "exposure days after a forged batch")
    }
    if (scheme == Scheme.LOW_COST) {
        test("$scheme: a list without its Signature header is rejected") {
            val phone = TracingEngine.restore(bobSaved, STORAGE_KEY, w.config)
            val e = expectThrows<Dp3tException.BadSignature>("unsigned") { phone.ingest(batch.copy(signatureHeader = null)) }
            expect(e.message?.contains("Signature header"), true, "message names the header: ${e.message}")
        }
    }
    test("$scheme: a batch of another scheme is refused") {
        val kind = if (scheme == Scheme.GAEN) BatchKind.LOW_COST_LIST else BatchKind.GAEN_EXPORT_ZIP
        expectThrows<Dp3tException.WrongScheme>("wrong kind") { w.phone().ingest(batch.copy(kind = kind)) }
    }
    test("$scheme: state survives save and restore") {
        val restored = TracingEngine.restore(bobSaved, STORAGE_KEY, w.config)
        expect(restored.ingest(batch) > 0u, true, "matches after restore")
        val again = TracingEngine.restore(restored.save(STORAGE_KEY), STORAGE_KEY, w.config)
        expect(days(again, now), listOf(DAY to 30.0), "exposure days after a second round trip")
        expectThrows<Dp3tException.WrongStorageKey>("wrong key") {
            TracingEngine.restore(bobSaved, ByteArray(32), w.config)
        }
        expectThrows<Dp3tException.InvalidInput>("short key") {
            TracingEngine.restore(bobSaved, ByteArray(16), w.config)
        }
    }
    test("$scheme: fake uploads look like real ones") {
        val fake = alice.buildFakeUpload(at(DAY + 1, 10))
        expect(fake.path, upload.path, "path")
        expect(fake.json.length, upload.json.length, "length")
        val next = alice.nextFakeUploadTime(now)
        expect(next >= now, true, "next fake upload not in the past")
    }
    listOf(alice, bob, carol, dave).forEach { it.close() }
}

/** Every engine story; true when all passed (run by StoriesTest under `mvn test`). */
fun engineStories(): Boolean {
    story(Scheme.GAEN)
    story(Scheme.LOW_COST)

    test("OS exposure windows are scored") {
        val scans = List(16) { ScanInstance(typicalAttenuationDb = 50, secondsSinceLastScan = 60u) }
        val windows = listOf(ExposureWindow(DAY.toUInt(), scans), ExposureWindow((DAY - 1).toUInt(), scans.take(10)))
        val result = exposureDaysFromWindows(windows, ScoringConfig(), at(DAY, 20))
        expect(result.map { it.day.toLong() to it.weightedMinutes }, listOf(DAY to 16.0), "exposure days")
        expectThrows<Dp3tException.InvalidInput>("bad config") {
            exposureDaysFromWindows(windows, ScoringConfig(factorLow = Double.NaN), at(DAY, 20))
        }
    }
    test("response signatures are verified with the system clock") {
        val key = ServerKey()
        val body = """{"ok":true}""".toByteArray()
        val now = System.currentTimeMillis() / 1000
        verifyResponseSignature(body, signatureHeader(body, key, now - 60, now + 3600, null), key.pem)
        expectThrows<Dp3tException.BadSignature>("expired") {
            verifyResponseSignature(body, signatureHeader(body, key, now - 7200, now - 3600, null), key.pem)
        }
    }
    test("one engine is shared by several threads") {
        val w = World(Scheme.GAEN)
        val alice = w.phone()
        val bob = w.phone()
        val beacons = (0 until 4).map { alice.currentBeacon(at(DAY, 10, 10 * it)) }
        val threads = beacons.mapIndexed { i, b ->
            Thread { repeat(100) { s -> bob.recordSighting(b.payload, at(DAY, 10, 10 * i) + s.toULong(), 40, 6u) } }
        }
        threads.forEach { it.start() }
        threads.forEach { it.join() }
        val batch = w.publish(alice.buildUpload(at(DAY, 0), at(DAY, 20)), at(DAY + 1, 0))
        bob.ingest(batch)
        expect(days(bob, at(DAY + 1, 1)), listOf(DAY to 40.0), "4 x 100 x 6 s near")
    }

    test("the Kotlin example of docs/MOBILE.md runs its offline steps") {
        // `Tracing` is the example class, extracted from the guide and compiled with this file.
        val dir = kotlin.io.path.createTempDirectory("dp3t-guide").toFile()
        val w = World(Scheme.GAEN)
        val key = ByteArray(32) { 9 }
        val phone = Tracing(dir, key, "http://127.0.0.1:9", w.key.pem)
        val other = w.phone()
        val beacon = phone.nextAdvertisement()
        expect(beacon.payload.size, 20, "advertised payload")
        for (m in 0 until 20) {
            val heard = other.currentBeacon(nowUnix() - 3600u + (60 * m).toULong())
            phone.onBeacon(heard.payload, rssi = -60, txPowerDbm = -15, scanSeconds = 60u)
        }
        expect(phone.exposedDays(), emptyList(), "no exposure before any download")
        phone.persist()
        val again = Tracing(dir, key, "http://127.0.0.1:9", w.key.pem)
        expect(again.engine.currentBeacon(nowUnix()).payload.size, 20, "restored engine")
        // The guide's own WrongStorageKey fallback: another key opens a fresh engine.
        Tracing(dir, ByteArray(32), "http://127.0.0.1:9", w.key.pem)
        dir.deleteRecursively()
    }

    println("$passed passed, $failed failed")
    return failed == 0 && passed > 0
}

fun main() {
    exitProcess(if (engineStories()) 0 else 1)
}
