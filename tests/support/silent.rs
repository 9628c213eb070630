//! A libvirt that is there and never answers, like a wedged daemon: a Unix
//! socket that accepts every connection and says nothing, until the guard
//! is dropped. However many connections arrive (none, when a helper is
//! killed at its deadline before it connects), the thread ends when told.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct SilentLibvirt {
    /// The socket's path (`qemu+unix:///system?socket=PATH`).
    pub socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentLibvirt {
    /// Listens at `socket` (a path in a temporary directory).
    pub fn at(socket: &Path) -> SilentLibvirt {
        let listener = UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => conns.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SilentLibvirt {
            socket: socket.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    /// `qemu+unix:///system?socket=...` for it.
    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket.display())
    }
}

impl Drop for SilentLibvirt {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
