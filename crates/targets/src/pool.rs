//! A bounded pool of exclusive connections: at most `size` in use at once, any idle one
//! serves the next operation.
//!
//! An operation first takes a permit (one of `size`; waiting for it is waiting for a
//! connection, and counts in the operation's latency), then the most recently returned idle
//! connection, if any (last in, first out, so the connections in use stay warm and the rest
//! may be closed by the server's idle timeout, which the targets notice before reuse). With
//! no idle connection the caller opens one; since a permit is held, the pool never opens
//! more than `size`.
//!
//! A connection goes back only through [`Lease::put_back`], which a caller does once the
//! exchange ended cleanly. A lease dropped without it (an error, or a call the generator
//! cancelled at its timeout) drops its connection and frees its permit, so a late reply is
//! never read as the answer to the next request.
//!
//! The pool replaced pinning operation `seq` to connection `seq % size`: pinned, an
//! open-loop operation waited behind its own connection even while others were idle.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// A pool of at most `size` connections of type `C`. See the module doc.
pub struct ConnPool<C> {
    permits: Semaphore,
    idle: Mutex<Vec<C>>,
    size: usize,
}

/// The right to use one connection until dropped; holds an idle connection if one was free.
pub struct Lease<'a, C> {
    pool: &'a ConnPool<C>,
    conn: Option<C>,
    _permit: SemaphorePermit<'a>,
}

impl<C> ConnPool<C> {
    /// A pool of `size` connections (at least 1), holding `first` idle if given.
    pub fn new(size: usize, first: Option<C>) -> ConnPool<C> {
        let size = size.max(1);
        let mut idle = Vec::with_capacity(size);
        idle.extend(first);
        ConnPool {
            permits: Semaphore::new(size),
            idle: Mutex::new(idle),
            size,
        }
    }

    /// The most connections in use at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Connections idle now.
    pub fn idle(&self) -> usize {
        self.lock_idle().len()
    }

    /// Waits for a permit and takes an idle connection if there is one. The wait is bounded
    /// by the caller (the generator's timeout). `None` only if the semaphore was closed,
    /// which nothing does (the callers turn it into an operation error, never a panic).
    pub async fn lease(&self) -> Option<Lease<'_, C>> {
        let permit = self.permits.acquire().await.ok()?;
        let conn = self.lock_idle().pop();
        Some(Lease {
            pool: self,
            conn,
            _permit: permit,
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<C>> {
        // A panic while holding this lock can only be in Vec::push/pop: the Vec is intact.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C> Lease<'_, C> {
    /// The idle connection this lease took, if any (the caller opens one otherwise).
    pub fn take(&mut self) -> Option<C> {
        self.conn.take()
    }

    /// Returns a connection whose exchange ended cleanly; frees the permit.
    pub fn put_back(mut self, conn: C) {
        let mut idle = self.pool.lock_idle();
        idle.push(conn);
        // A connection taken but not used goes back too.
        idle.extend(self.conn.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn any_idle_connection_serves_and_a_dropped_lease_loses_its_connection() {
        let pool = ConnPool::new(2, Some(1u32));
        let mut a = pool.lease().await.unwrap();
        assert_eq!(a.take(), Some(1));
        let mut b = pool.lease().await.unwrap();
        assert_eq!(b.take(), None, "only one connection was idle");
        b.put_back(2);
        a.put_back(1);
        assert_eq!(pool.idle(), 2);
        // Last in, first out.
        assert_eq!(pool.lease().await.unwrap().take(), Some(1));
        // That lease was dropped without put_back: connection 1 is gone.
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.lease().await.unwrap().take(), Some(2));
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn never_more_leases_than_size_and_a_freed_permit_lets_the_next_one_in() {
        let pool = ConnPool::<u32>::new(1, None);
        let held = pool.lease().await.unwrap();
        assert!(
            pool.lease().now_or_never().is_none(),
            "a second lease must wait for the first"
        );
        drop(held);
        assert!(
            pool.lease().now_or_never().flatten().is_some(),
            "a dropped lease frees its permit"
        );
        assert_eq!(pool.size(), 1);
        assert_eq!(
            ConnPool::<u32>::new(0, None).size(),
            1,
            "size is at least 1"
        );
    }
}
