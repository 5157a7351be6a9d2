// The Kotlin stories as JUnit tests, for `mvn test` (mobile-ffi/kotlin/pom.xml, run by
// run-bindings.sh). Each story file keeps its own `main` for a run by hand.

import org.junit.Assert.assertTrue
import org.junit.Test

class StoriesTest {
    /** TestStory.kt: the engine for GAEN and low-cost, and the guide's offline steps. */
    @Test
    fun engine() = assertTrue("engine stories failed (see the output)", engineStories())

    /** SessionStory.kt: two phones through TracingSession against the test key server. */
    @Test
    fun session() = assertTrue("session stories failed (see the output)", sessionStories())

    /** TransportStory.kt: TracingClient's suspend calls through a Kotlin HttpTransport. */
    @Test
    fun transport() = assertTrue("transport stories failed (see the output)", transportStories())
}
