// The optional transport on the JVM: TracingClient drives a TracingSession through an
// HttpTransport written here on java.net.http (what an app writes with OkHttp), against
// the real key server that run-bindings.sh starts. `sync()` and
// `reportInfectedWithToken()` are suspend functions, run with runBlocking
// (kotlinx-coroutines). Bob hears Alice; Alice reports in one call (a dev token minted by
// `dp3t-backend token`: SessionStory.kt's Io); Bob syncs in one call until exposed. A
// transport without network shows in the status.

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import org.dp3t.mobile.Dp3tException
import org.dp3t.mobile.HttpHeader
import org.dp3t.mobile.HttpMethod
import org.dp3t.mobile.HttpRequest
import org.dp3t.mobile.HttpResponse
import org.dp3t.mobile.HttpTransport
import org.dp3t.mobile.InfectionStatus
import org.dp3t.mobile.ReportPhase
import org.dp3t.mobile.Scheme
import org.dp3t.mobile.Server
import org.dp3t.mobile.TracingClient
import org.dp3t.mobile.TracingError
import org.dp3t.mobile.TracingSession
import org.dp3t.mobile.TransportException
import java.io.IOException
import java.net.URI
import java.net.http.HttpClient
import java.time.Duration
import kotlin.system.exitProcess

private val transportBackend = System.getenv("DP3T_TEST_BACKEND") ?: ""

private fun transportNow(): ULong = (System.currentTimeMillis() / 1000).toULong()

private fun verify(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

/** The app's transport: base URL by server, then one HTTP exchange off the caller's thread. */
class JdkTransport(private val backend: String, private val authority: String) : HttpTransport {
    private val http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build()
    val sent = java.util.concurrent.CopyOnWriteArrayList<HttpRequest>()

    override suspend fun send(request: HttpRequest): HttpResponse = withContext(Dispatchers.IO) {
        sent += request
        val base = if (request.server == Server.AUTHORITY) authority else backend
        val builder = java.net.http.HttpRequest.newBuilder(URI.create(base + request.path))
            .timeout(Duration.ofSeconds(20))
        for (h in request.headers) builder.header(h.name, h.value)
        when (request.method) {
            HttpMethod.GET -> builder.GET()
            HttpMethod.POST -> builder.POST(java.net.http.HttpRequest.BodyPublishers.ofByteArray(request.body))
        }
        val resp = try {
            http.send(builder.build(), java.net.http.HttpResponse.BodyHandlers.ofByteArray())
        } catch (e: IOException) {
            throw TransportException.Network(e.toString())
        }
        val headers = resp.headers().map().flatMap { (k, vs) -> vs.map { HttpHeader(k, it) } }
        HttpResponse(resp.statusCode().toUShort(), headers, resp.body())
    }
}

fun transportStory() = runBlocking {
    val intoDay = System.currentTimeMillis() / 1000 % 86_400
    if (intoDay < 120) delay((121 - intoDay) * 1000)
    val now = transportNow()
    val quiet = { sessionConfig(Scheme.LOW_COST).copy(fakeRatePerDay = 0.0) }
    // The authority is not called: Alice reports with a token.
    val alice = TracingClient(TracingSession(quiet(), now), JdkTransport(transportBackend, "http://127.0.0.1:9"))
    val bobHttp = JdkTransport(transportBackend, "http://127.0.0.1:9")
    val bob = TracingClient(TracingSession(quiet(), now), bobHttp)
    val payload = alice.session().currentBeacon(now).payload
    repeat(30) { bob.session().onSighting(payload, now - 60uL, 45, 60u) }

    // The first round is empty (the start bucket has not ended): a success all the same.
    var status = bob.sync()
    verify(status.errors.isEmpty() && status.lastSyncUnix != null) { "first sync: $status" }

    status = alice.reportInfectedWithToken(Io().token(false), now)
    verify(status.report == ReportPhase.DONE && status.infection == InfectionStatus.INFECTED) { "report: $status" }

    val deadline = System.currentTimeMillis() + 60_000
    while (System.currentTimeMillis() < deadline) {
        status = bob.sync()
        if (status.infection == InfectionStatus.EXPOSED) break
        delay(1000)
    }
    verify(status.infection == InfectionStatus.EXPOSED) { "bob: $status" }
    verify(status.exposureDays.map { it.day } == listOf((now / 86_400uL).toUInt())) { "${status.exposureDays}" }
    verify(bobHttp.sent.isNotEmpty() && status.errors.isEmpty()) { "syncs through the transport: $status" }
    verify(bob.runDue() > transportNow()) { "the next wake-up is in the future" }
}

fun offlineStory() = runBlocking {
    val offline = object : HttpTransport {
        var calls = 0
        override suspend fun send(request: HttpRequest): HttpResponse {
            calls++
            throw TransportException.Network("offline")
        }
    }
    val client = TracingClient(TracingSession(sessionConfig(Scheme.GAEN).copy(fakeRatePerDay = 0.0), transportNow()), offline)
    val status = client.sync()
    verify(offline.calls == 1 && status.errors == listOf(TracingError.Network)) { "offline: $status" }
    try {
        client.reportInfected("not a code!", transportNow())
        throw AssertionError("a malformed code must be refused")
    } catch (e: Dp3tException.InvalidInput) {
    }
}

/** The transport stories against the test key server; true when all passed. */
fun transportStories(): Boolean {
    if (transportBackend.isEmpty()) {
        System.err.println("no test backend: run mobile-ffi/tests/run-bindings.sh")
        return false
    }
    var failed = 0
    for ((name, body) in listOf("transport story" to ::transportStory, "offline transport" to ::offlineStory)) {
        try {
            body()
            println("PASS $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: $e")
            e.printStackTrace()
        }
    }
    println("${2 - failed} passed, $failed failed")
    return failed == 0
}

fun main(@Suppress("UNUSED_PARAMETER") args: Array<String>) {
    exitProcess(if (transportStories()) 0 else 1)
}
