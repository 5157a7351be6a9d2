// Two phones driven through TracingSession only, on the JVM, against the real key server
// that run-bindings.sh starts (DP3T_TEST_BACKEND, DP3T_TEST_DATA_DIR, DP3T_BACKEND_BIN).
// The test is the app's I/O layer: java.net.http for the backend, and for the health
// authority: the real `dp3t-authority` when DP3T_TEST_AUTHORITY is set (run-bindings.sh
// starts it and creates the code there with DP3T_TEST_AUTHORITY_KEY, as a lab system
// does), else a stand-in that answers the code exchange (POST /v1/onset) with tokens
// minted by `dp3t-backend token`. Alice advertises (BLE format), Bob hears her, Alice reports with a
// code, both sync on their own schedule, Bob ends up exposed; fake exchanges and uploads
// run on their schedule in the same run. Plus the padded upload of OS keys.

import org.dp3t.mobile.Dp3tException
import org.dp3t.mobile.EngineConfig
import org.dp3t.mobile.HttpHeader
import org.dp3t.mobile.HttpMethod
import org.dp3t.mobile.HttpRequest
import org.dp3t.mobile.InfectionStatus
import org.dp3t.mobile.OsExposureKey
import org.dp3t.mobile.ReportPhase
import org.dp3t.mobile.RequestPurpose
import org.dp3t.mobile.Scheme
import org.dp3t.mobile.Server
import org.dp3t.mobile.SessionConfig
import org.dp3t.mobile.StatusListener
import org.dp3t.mobile.TracingEngine
import org.dp3t.mobile.TracingSession
import org.dp3t.mobile.TracingStatus
import org.dp3t.mobile.advertisement
import org.dp3t.mobile.gaenUploadFromOsKeys
import org.dp3t.mobile.parseAdvertisement
import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.time.Duration
import java.time.ZoneOffset
import java.time.ZonedDateTime
import java.time.format.DateTimeFormatter
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.system.exitProcess

private val backend = System.getenv("DP3T_TEST_BACKEND") ?: ""
private val dataDir = System.getenv("DP3T_TEST_DATA_DIR") ?: ""
private val backendBin = System.getenv("DP3T_BACKEND_BIN") ?: ""
private val bucket = (System.getenv("DP3T_TEST_BUCKET_SECONDS") ?: "2").toULong()
private const val CODE = "123456789012"
private val authorityUrl = System.getenv("DP3T_TEST_AUTHORITY") ?: ""
private val authorityKey = System.getenv("DP3T_TEST_AUTHORITY_KEY") ?: ""

/** A code for today's onset: from the real authority (`POST /v1/authcode` with an API
 *  key, as a lab system creates one), or the stand-in's fixed one. */
fun newCode(): String {
    if (authorityUrl.isEmpty()) return CODE
    val today = ZonedDateTime.now(ZoneOffset.UTC).toLocalDate().toString()
    val request = java.net.http.HttpRequest.newBuilder(URI.create("$authorityUrl/v1/authcode"))
        .timeout(Duration.ofSeconds(20))
        .header("Content-Type", "application/json")
        .header("Authorization", "Bearer $authorityKey")
        .POST(java.net.http.HttpRequest.BodyPublishers.ofString("{\"onsetDate\":\"$today\"}"))
        .build()
    val resp = HttpClient.newHttpClient()
        .send(request, java.net.http.HttpResponse.BodyHandlers.ofString())
    expectThat(resp.statusCode() == 200) { "authcode: ${resp.statusCode()} ${resp.body()}" }
    return Regex("\"authorizationCode\"\\s*:\\s*\"([0-9]+)\"").find(resp.body())!!.groupValues[1]
}

private fun epochNow(): ULong = (System.currentTimeMillis() / 1000).toULong()

private fun expectThat(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

/** The app's I/O: the backend over HTTP and a stand-in health authority. */
class Io {
    private val http: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build()
    private val codes = mutableSetOf(CODE)
    val exchanges = mutableListOf<Boolean>()
    private val fakeTokens = mutableSetOf<String>()
    /** (fake, status, body length) of every upload. */
    val uploads = mutableListOf<Triple<Boolean, Int, Int>>()

    fun token(fake: Boolean): String {
        val onset = ZonedDateTime.now(ZoneOffset.UTC).toLocalDate().toString()
        val args = mutableListOf(backendBin, "token", "--data-dir", dataDir, "--onset", onset)
        if (fake) args += "--fake"
        val p = ProcessBuilder(args).redirectErrorStream(false).start()
        val out = p.inputStream.bufferedReader().readText().trim()
        expectThat(p.waitFor() == 0) { "dp3t-backend token failed" }
        return out
    }

    private fun authority(req: HttpRequest): Triple<Int, List<HttpHeader>, ByteArray> {
        expectThat(req.method == HttpMethod.POST && req.path == "/v1/onset") { "exchange ${req.path}" }
        val body = String(req.body)
        val fake = body.contains("\"fake\":\"1\"")
        expectThat(fake || body.contains("\"fake\":\"0\"")) { body }
        val code = Regex("\"authorizationCode\":\"([0-9A-Za-z]+)\"").find(body)!!.groupValues[1]
        expectThat(code.length == 12) { "code $code" }
        exchanges += fake
        if (authorityUrl.isNotEmpty()) {
            val builder = java.net.http.HttpRequest.newBuilder(URI.create(authorityUrl + req.path))
                .timeout(Duration.ofSeconds(20))
            for (h in req.headers) builder.header(h.name, h.value)
            builder.POST(java.net.http.HttpRequest.BodyPublishers.ofByteArray(req.body))
            val resp = http.send(builder.build(), java.net.http.HttpResponse.BodyHandlers.ofByteArray())
            val headers = resp.headers().map().flatMap { (k, vs) -> vs.map { HttpHeader(k, it) } }
            if (fake && resp.statusCode() == 200) {
                val token = Regex("\"accessToken\"\\s*:\\s*\"([^\"]+)\"").find(String(resp.body()))!!.groupValues[1]
                fakeTokens += token
            }
            return Triple(resp.statusCode(), headers, resp.body())
        }
        val date = DateTimeFormatter.RFC_1123_DATE_TIME.format(ZonedDateTime.now(ZoneOffset.UTC))
        val headers = listOf(HttpHeader("Date", date), HttpHeader("Content-Type", "application/json"))
        if (!fake && !codes.remove(code)) return Triple(404, headers, ByteArray(0))
        val token = token(fake)
        if (fake) fakeTokens += token
        return Triple(200, headers, "{\"accessToken\":\"$token\"}".toByteArray())
    }

    private fun backend(req: HttpRequest): Triple<Int, List<HttpHeader>, ByteArray> {
        val builder = java.net.http.HttpRequest.newBuilder(URI.create(backend + req.path))
            .timeout(Duration.ofSeconds(20))
        for (h in req.headers) builder.header(h.name, h.value)
        when (req.method) {
            HttpMethod.GET -> builder.GET()
            HttpMethod.POST -> builder.POST(java.net.http.HttpRequest.BodyPublishers.ofByteArray(req.body))
        }
        val resp = http.send(builder.build(), java.net.http.HttpResponse.BodyHandlers.ofByteArray())
        val headers = resp.headers().map().flatMap { (k, vs) -> vs.map { HttpHeader(k, it) } }
        if (req.purpose == RequestPurpose.UPLOAD) {
            val token = req.headers.first { it.name == "Authorization" }.value.removePrefix("Bearer ")
            uploads += Triple(token in fakeTokens, resp.statusCode(), req.body.size)
        }
        return Triple(resp.statusCode(), headers, resp.body())
    }

    /** One wake-up of `phone`; returns when it wants to be woken next. */
    fun drive(phone: TracingSession): ULong {
        val actions = phone.nextActions(epochNow())
        for (req in actions.requests) {
            val (status, headers, body) =
                if (req.server == Server.AUTHORITY) authority(req) else backend(req)
            phone.onResponse(req.id, status.toUShort(), headers, body, epochNow())
        }
        return actions.wakeAtUnix
    }
}

fun sessionConfig(scheme: Scheme): SessionConfig {
    val pem = File(dataDir, "signing-key.pub.pem").readText()
    val hour = ZonedDateTime.now(ZoneOffset.UTC).hour
    return SessionConfig(
        engine = EngineConfig(scheme = scheme, backendPublicKeyPem = pem),
        // Local time about noon: fake reports are placed in waking hours.
        utcOffsetMinutes = (12 - hour) * 60,
        syncIntervalSeconds = bucket,
        releaseBucketSeconds = bucket,
        fakeRatePerDay = 86_400.0 / 6,
        syncJitterSeconds = 0uL,
        retryMinSeconds = 1uL,
    )
}

fun sessionStory() {
    val io = Io()
    // Keep the contact on one UTC day.
    val intoDay = System.currentTimeMillis() / 1000 % 86_400
    if (intoDay < 120) Thread.sleep((121 - intoDay) * 1000)
    val now = epochNow()
    val alice = TracingSession(sessionConfig(Scheme.LOW_COST), now)
    val bob = TracingSession(sessionConfig(Scheme.LOW_COST), now)
    val seen = CopyOnWriteArrayList<TracingStatus>()
    bob.setStatusListener(object : StatusListener {
        override fun onStatusChanged(status: TracingStatus) {
            seen += status
        }
    })

    val beacon = alice.currentBeacon(now)
    val adv = advertisement(beacon.payload)
    expectThat(adv.serviceUuid16 == 0xFD68.toUShort()) { "service UUID ${adv.serviceUuid16}" }
    val heard = parseAdvertisement(byteArrayOf(2, 1, 6) + adv.adBytes)
    expectThat(heard.contentEquals(beacon.payload)) { "parsed EphID" }
    // 30 minutes close by, in the minute before now: a sighting must end before the batch
    // that publishes the key is released (anything later would be a replay).
    repeat(30) { bob.onSighting(heard, now - 60uL, 45, 60u) }

    val code = newCode()
    alice.reportInfected(code, now, now)
    try {
        alice.reportInfected(code, now, now)
        throw AssertionError("a second report must be refused")
    } catch (e: Dp3tException.InvalidState) {
    }

    val deadline = System.currentTimeMillis() + 120_000
    while (System.currentTimeMillis() < deadline) {
        val wake = minOf(io.drive(alice), io.drive(bob))
        val t = epochNow()
        if (bob.status(t).infection == InfectionStatus.EXPOSED &&
            alice.status(t).report == ReportPhase.DONE &&
            io.uploads.any { it.first }
        ) break
        val sleepMs = ((wake.toLong() * 1000) - System.currentTimeMillis()).coerceIn(50, 500)
        Thread.sleep(sleepMs)
    }
    val t = epochNow()
    val a = alice.status(t)
    val b = bob.status(t)
    expectThat(a.report == ReportPhase.DONE && a.infection == InfectionStatus.INFECTED && !a.tracingActive) { "$a" }
    expectThat(b.infection == InfectionStatus.EXPOSED) { "$b ${io.uploads} ${io.exchanges}" }
    expectThat(b.exposureDays.map { it.day } == listOf((now / 86_400uL).toUInt())) { "${b.exposureDays}" }
    expectThat(seen.any { it.infection == InfectionStatus.EXPOSED }) { "listener heard the exposure" }
    expectThat(io.exchanges.count { !it } == 1 && io.exchanges.any { it }) { "exchanges ${io.exchanges}" }
    val real = io.uploads.filter { !it.first }
    val fakes = io.uploads.filter { it.first }
    expectThat(real.size == 1 && real[0].second == 200) { "real uploads $real" }
    expectThat(fakes.isNotEmpty() && fakes.all { it.second == 200 }) { "fake uploads $fakes" }
    expectThat(io.uploads.map { it.third }.toSet().size == 1) { "upload sizes ${io.uploads}" }
    try {
        alice.currentBeacon(t)
        throw AssertionError("tracing must stop after the report")
    } catch (e: Dp3tException.InvalidState) {
    }
    val key = ByteArray(32) { it.toByte() }
    val restored = TracingSession.restore(bob.save(key), key, sessionConfig(Scheme.LOW_COST))
    expectThat(restored.status(t).exposureDays == b.exposureDays) { "restored status" }
}

fun osKeysStory() {
    val now = epochNow()
    val day = (now / 86_400uL).toUInt()
    val keys = (0 until 5).map { d ->
        OsExposureKey(ByteArray(16) { (it + d).toByte() }, (day - d.toUInt()) * 144u, 144u)
    }
    val upload = gaenUploadFromOsKeys(keys, (day - 2u).toULong() * 86_400uL, now)
    expectThat(upload.path == "/v2/gaen/exposed") { upload.path }
    expectThat(Regex("\"fake\":0").findAll(upload.json).count() == 3) { "3 real keys" }
    expectThat(gaenUploadFromOsKeys(emptyList(), now, now).json.length == upload.json.length) { "padded" }
    val http = HttpClient.newHttpClient()
    val req = java.net.http.HttpRequest.newBuilder(URI.create(backend + upload.path))
        .header("Content-Type", "application/json")
        .header("Authorization", "Bearer " + Io().token(false))
        .POST(java.net.http.HttpRequest.BodyPublishers.ofString(upload.json))
        .build()
    val status = http.send(req, java.net.http.HttpResponse.BodyHandlers.discarding()).statusCode()
    expectThat(status == 200) { "upload answered $status" }
}

/** A real and a fake upload, sealed to the server's signed key: one size, both accepted. */
fun sealedStory() {
    val now = epochNow()
    val pem = File(dataDir, "signing-key.pub.pem").readText()
    val alice = TracingEngine(EngineConfig(scheme = Scheme.GAEN, backendPublicKeyPem = pem))
    alice.currentBeacon(now)
    val http = HttpClient.newHttpClient()
    val keys = http.send(
        java.net.http.HttpRequest.newBuilder(URI.create("$backend/v2/sealed/key")).GET().build(),
        java.net.http.HttpResponse.BodyHandlers.ofByteArray(),
    )
    expectThat(keys.statusCode() == 200) { "key list answered ${keys.statusCode()}" }
    val keyList = keys.body()
    val signature = keys.headers().firstValue("Signature").orElse("")
    val io = Io()
    val real = alice.buildSealedUpload(now, io.token(false), keyList, signature, now)
    val fake = alice.buildSealedUpload(null, io.token(true), keyList, signature, now)
    expectThat(real.size == 8256 && fake.size == real.size) { "envelopes of ${real.size} and ${fake.size} bytes" }
    try {
        alice.buildSealedUpload(null, io.token(true), keyList + " ".toByteArray(), signature, now)
        throw AssertionError("a tampered key list was accepted")
    } catch (e: Dp3tException.BadSignature) {
    }
    for (envelope in listOf(real, fake)) {
        val req = java.net.http.HttpRequest.newBuilder(URI.create("$backend/v2/sealed"))
            .header("Content-Type", "application/octet-stream")
            .POST(java.net.http.HttpRequest.BodyPublishers.ofByteArray(envelope))
            .build()
        val status = http.send(req, java.net.http.HttpResponse.BodyHandlers.discarding()).statusCode()
        expectThat(status == 200) { "sealed upload answered $status" }
    }
}

/** The session stories against the test key server; true when all passed. */
fun sessionStories(): Boolean {
    if (backend.isEmpty() || dataDir.isEmpty() || backendBin.isEmpty()) {
        System.err.println("no test backend: run mobile-ffi/tests/run-bindings.sh")
        return false
    }
    var failed = 0
    val stories = listOf(
        "session story" to ::sessionStory,
        "OS keys upload" to ::osKeysStory,
        "sealed uploads" to ::sealedStory,
    )
    for ((name, body) in stories) {
        try {
            body()
            println("ok   $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: $e")
            e.printStackTrace()
        }
    }
    println("${stories.size - failed} passed, $failed failed")
    return failed == 0
}

fun main(@Suppress("UNUSED_PARAMETER") args: Array<String>) {
    exitProcess(if (sessionStories()) 0 else 1)
}
