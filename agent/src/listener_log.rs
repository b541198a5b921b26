//! Following the listener's log (`<state_dir>/listener.log`): woken by inotify when it
//! grows, and read from an offset in complete lines, so that a restarted agent can pick up
//! a listener that outlived it where its predecessor stopped reading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Wakes when the listener's log is written to (inotify), or after a second at the latest,
/// so the agent sees `Listening for Jobs` within milliseconds without polling.
pub struct LogChanges {
    inotify: Option<tokio::io::unix::AsyncFd<InotifyFd>>,
}

struct InotifyFd(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl LogChanges {
    // `AsyncFd::new` is deprecated for types whose raw fd may not be owned; `InotifyFd`
    // owns its descriptor for as long as the `AsyncFd` lives, and the replacement
    // (`register`) is `unsafe`, which this workspace forbids.
    #[allow(deprecated)]
    pub fn new(log: &std::path::Path) -> LogChanges {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| i.add_watch(log, AddWatchFlags::IN_MODIFY).map(|_| i))
            .ok()
            .and_then(|i| tokio::io::unix::AsyncFd::new(InotifyFd(i)).ok());
        LogChanges { inotify }
    }

    pub async fn next(&self) {
        let Some(fd) = &self.inotify else {
            return tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::select! {
            ready = fd.readable() => {
                if let Ok(mut guard) = ready {
                    let _ = guard.get_inner().0.read_events();
                    guard.clear_ready();
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Lines appended to `log` since `offset` (complete lines only); moves `offset` on.
pub fn read_new_lines(log: &std::path::Path, offset: &AtomicU64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return vec![];
    };
    let start = offset.load(Ordering::Relaxed);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return vec![];
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return vec![];
    }
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return vec![];
    };
    offset.store(start + end as u64 + 1, Ordering::Relaxed);
    String::from_utf8_lossy(&buf[..end])
        .lines()
        .map(str::to_owned)
        .collect()
}
