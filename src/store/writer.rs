//! The store's one connection, owned by one thread that commits in groups.
//!
//! Every request (a closure on the connection) is queued to the thread. It
//! takes what is queued, up to [`MAX_GROUP`], runs each request in a
//! savepoint of one transaction, commits once, and only then answers each
//! request: what a request wrote is on disk (WAL, `synchronous = FULL`)
//! before its caller hears of it, and a burst of calls costs one disk flush
//! per group instead of one per write. A request that fails is rolled back
//! to its savepoint alone; a failed commit fails the whole group.

use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// Most requests committed together.
pub(super) const MAX_GROUP: usize = 64;

/// What a request leaves for after the commit: it answers its caller with
/// its own result, or with the commit's error.
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A queued request: run in the group's transaction, or failed unrun.
trait Request: Send {
    fn run(self: Box<Self>, conn: &mut Connection) -> Answer;
    fn fail(self: Box<Self>, why: &StoreError);
}

struct Typed<R, F> {
    f: F,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Request for Typed<R, F>
where
    R: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> Answer {
        let Typed { f, reply } = *self;
        let result = in_savepoint(conn, f);
        Box::new(move |committed: Result<(), &StoreError>| {
            let result = match committed {
                Ok(()) => result,
                Err(e) => Err(StoreError::Worker(format!("commit failed: {e}"))),
            };
            let _ = reply.send(result);
        })
    }

    fn fail(self: Box<Self>, why: &StoreError) {
        let _ = self.reply.send(Err(StoreError::Worker(format!(
            "cannot begin a transaction: {why}"
        ))));
    }
}

#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Request>>,
}

impl Writer {
    /// Starts the thread; it ends when the last [`Writer`] is dropped.
    pub(super) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (queue, requests) = mpsc::channel::<Box<dyn Request>>();
        std::thread::Builder::new()
            .name("wsb-store".into())
            .spawn(move || run(conn, requests))
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        Ok(Writer { queue })
    }

    /// Queues `f` at once; the receiver gets its result once committed (a
    /// closed receiver means the thread is gone).
    pub(super) fn submit<R, F>(&self, f: F) -> oneshot::Receiver<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let _ = self.queue.send(Box::new(Typed { f, reply }));
        rx
    }
}

/// Runs `f` all-or-nothing inside the group's transaction.
fn in_savepoint<R>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT request")?;
    match f(conn) {
        Ok(r) => {
            conn.execute_batch("RELEASE request")?;
            Ok(r)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO request; RELEASE request");
            Err(e)
        }
    }
}

fn run(mut conn: Connection, requests: mpsc::Receiver<Box<dyn Request>>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = StoreError::from(e);
            for request in group {
                request.fail(&e);
            }
            continue;
        }
        let answers: Vec<Answer> = group.into_iter().map(|r| r.run(&mut conn)).collect();
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for answer in answers {
            answer(committed.as_ref().map(|_| ()));
        }
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;

    /// Requests queued while the thread is busy form one group: each gets
    /// its own answer, and one that fails is undone alone (its first insert
    /// too) while the others are committed.
    #[test]
    fn a_failing_request_is_undone_alone_and_its_group_commits() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER UNIQUE)")
            .unwrap();
        let w = Writer::start(conn).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let first = w.submit(move |_| {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok(())
        });
        started.recv().unwrap();
        let insert = |vals: &'static [i64]| {
            w.submit(move |c| {
                for v in vals {
                    c.execute("INSERT INTO t VALUES (?1)", [v])?;
                }
                Ok(())
            })
        };
        let a = insert(&[1]);
        let b = insert(&[2, 1]);
        let d = insert(&[3]);
        let all = w.submit(|c| {
            Ok(c.query_row(
                "SELECT group_concat(v) FROM (SELECT v FROM t ORDER BY v)",
                [],
                |r| r.get::<_, String>(0),
            )?)
        });
        go.send(()).unwrap();
        assert!(first.blocking_recv().unwrap().is_ok());
        assert!(a.blocking_recv().unwrap().is_ok());
        assert!(b.blocking_recv().unwrap().is_err(), "1 is taken");
        assert!(d.blocking_recv().unwrap().is_ok());
        assert_eq!(all.blocking_recv().unwrap().unwrap(), "1,3");
    }

    /// The writer's thread ends with its last handle; a request to a
    /// writer whose thread is gone gets an error, not a hang.
    #[test]
    fn requests_after_the_thread_is_gone_fail() {
        let w = Writer::start(Connection::open_in_memory().unwrap()).unwrap();
        let r = w.submit(|_| -> Result<(), StoreError> { panic!("a bug in a request") });
        assert!(
            r.blocking_recv().is_err(),
            "the panicking request's reply is dropped"
        );
        assert!(w.submit(|_| Ok(())).blocking_recv().is_err());
    }
}
