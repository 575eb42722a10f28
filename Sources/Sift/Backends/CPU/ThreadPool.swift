#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A fixed set of worker threads that run `parallelFor` jobs together with the calling thread.
///
/// Work items are handed out through an atomic counter, so uneven items balance themselves.
/// Workers spin briefly after a job (decode issues hundreds of small jobs per token, and
/// waking a sleeping thread costs tens of microseconds), then sleep on a condition variable.
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int

    private typealias Job = (Int) -> Void
    private var job: UnsafeMutablePointer<Job>? = nil
    private var jobCount = 0
    private let next = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let generation = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var workers: [pthread_t] = []

    /// Number of processors available to this process.
    public static var processorCount: Int {
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return max(1, Int(n))
    }

    public init(threads: Int = ThreadPool.processorCount) {
        threadCount = max(1, threads)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        for _ in 1..<threadCount {
            let box = Unmanaged.passRetained(self)
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let pool = Unmanaged<ThreadPool>.fromOpaque(arg!).takeRetainedValue()
                pool.workerLoop()
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            workers.append(tid)
        }
    }

    /// Stops the workers. The pool cannot be used afterwards.
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        pthread_mutex_lock(&mutex)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
        for t in workers { pthread_join(t, nil) }
        workers = []
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&cond)
    }

    /// Runs `body(i)` for i in 0..<count on all threads and returns when all are done.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if threadCount == 1 || count == 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { escaping in
            let slot = UnsafeMutablePointer<Job>.allocate(capacity: 1)
            slot.initialize(to: escaping)
            defer { slot.deinitialize(count: 1); slot.deallocate() }
            pthread_mutex_lock(&mutex)
            job = slot
            jobCount = count
            next.store(0, ordering: .relaxed)
            pending.store(threadCount - 1, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            pthread_cond_broadcast(&cond)
            pthread_mutex_unlock(&mutex)
            runItems(slot.pointee, count)
            // Wait until every worker has left this job (they may still hold `slot`).
            while pending.load(ordering: .acquiring) > 0 { spinPause() }
            job = nil
        }
    }

    /// Splits 0..<total into chunks of at least `grain` and runs `body(range)` on them.
    public func parallelRanges(_ total: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if total <= 0 { return }
        let chunks = max(1, min(threadCount * 4, (total + grain - 1) / max(grain, 1)))
        if chunks == 1 { body(0..<total); return }
        let size = (total + chunks - 1) / chunks
        let n = (total + size - 1) / size
        parallelFor(n) { c in body((c * size)..<min(total, (c + 1) * size)) }
    }

    @inline(__always)
    private func runItems(_ body: Job, _ count: Int) {
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            if i >= count { break }
            body(i)
        }
    }

    private func workerLoop() {
        var seen = 0  // the generation at creation; reading it here would race with the first job
        while true {
            // Spin a little for the next job before sleeping.
            var spins = 0
            while generation.load(ordering: .acquiring) == seen && spins < 20_000 {
                spinPause()
                spins += 1
            }
            if generation.load(ordering: .acquiring) == seen {
                pthread_mutex_lock(&mutex)
                while generation.load(ordering: .acquiring) == seen {
                    pthread_cond_wait(&cond, &mutex)
                }
                pthread_mutex_unlock(&mutex)
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            pthread_mutex_lock(&mutex)
            let slot = job
            let count = jobCount
            pthread_mutex_unlock(&mutex)
            if let slot { runItems(slot.pointee, count) }
            pending.subtract(1, ordering: .releasing)
        }
    }
}

/// A short busy wait between polls of an atomic (keeps the loop from hammering the cache line).
@inline(never)
func spinPause() {
    var x = 0
    for i in 0..<16 { x &+= i }
    _ = x
}
