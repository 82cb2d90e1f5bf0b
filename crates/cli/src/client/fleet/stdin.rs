//! Local stdin, read once and replayed to every host: the same bytes to
//! each, whenever its command starts (with `--fanout` below the number of
//! hosts, late hosts start after stdin has ended, so it is kept whole in
//! memory for the run, as `clush` does).

use bytes::{Bytes, BytesMut};
use rsh_client::{StdinWriter, MAX_STDIN_CHUNK};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Stdin as read so far: chunks shared by every host (`Bytes` clones, no
/// copies), and whether it has ended.
#[derive(Debug)]
pub(crate) struct StdinTape {
    chunks: Mutex<Vec<Bytes>>,
    /// (chunks recorded, ended): wakes the hosts' feeders.
    progress: watch::Sender<(usize, bool)>,
}

impl StdinTape {
    /// Starts recording `input` (our stdin) on a task of its own.
    pub fn record<R>(input: R) -> Arc<StdinTape>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let tape = Arc::new(StdinTape {
            chunks: Mutex::new(Vec::new()),
            progress: watch::Sender::new((0, false)),
        });
        tokio::spawn(tape.clone().read_all(input));
        tape
    }

    async fn read_all<R: AsyncRead + Unpin>(self: Arc<Self>, mut input: R) {
        let mut buf = BytesMut::new();
        loop {
            if buf.capacity() < MAX_STDIN_CHUNK {
                buf.reserve(4 * MAX_STDIN_CHUNK);
            }
            match input.read_buf(&mut buf).await {
                // A read error ends stdin for the hosts as end of file would;
                // their commands still run.
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    let count = {
                        let mut chunks = self.chunks();
                        chunks.push(chunk);
                        chunks.len()
                    };
                    self.progress.send_replace((count, false));
                }
            }
        }
        let count = self.chunks().len();
        self.progress.send_replace((count, true));
    }

    fn chunks(&self) -> std::sync::MutexGuard<'_, Vec<Bytes>> {
        self.chunks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends all of stdin to one command, from the start, then ends its
    /// stdin. Returns early if the command stops taking input.
    pub async fn feed(&self, stdin: StdinWriter) {
        let mut progress = self.progress.subscribe();
        let mut sent = 0;
        loop {
            let (count, ended) = *progress.borrow_and_update();
            let pending: Vec<Bytes> = self.chunks()[sent..count].to_vec();
            for chunk in pending {
                if stdin.write(chunk).await.is_err() {
                    return;
                }
            }
            sent = count;
            if ended {
                let _ = stdin.close().await;
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }
}
