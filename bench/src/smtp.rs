//! A minimal SMTP receiver on loopback for the benchmark: accepts every message, finds the
//! recipient and the code in the text part, and hands the code to whoever is waiting for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A code and the moment its message finished arriving.
pub struct Delivery {
    pub code: String,
    pub at: Instant,
}

#[derive(Clone, Default)]
pub struct Receiver {
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Delivery>>>>,
    pub received: Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    /// Registers interest in the next message to `address` (lowercase ASCII).
    pub fn expect(&self, address: &str) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(address.to_string(), tx);
        rx
    }

    pub fn forget(&self, address: &str) {
        self.waiting.lock().unwrap().remove(address);
    }

    /// Listens on 127.0.0.1 (port 0) and returns the port.
    pub async fn start(&self) -> std::io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let _ = this.session(stream).await;
                });
            }
        });
        Ok(port)
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut write = BufWriter::new(write);
        write.write_all(b"220 bench.smtp ESMTP\r\n").await?;
        let mut line = String::new();
        let mut rcpt: Vec<String> = Vec::new();
        loop {
            if !next_line(&mut lines, &mut write, &mut line).await? {
                return Ok(());
            }
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                write
                    .write_all(
                        b"250-bench.smtp\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n",
                    )
                    .await?;
            } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("MAIL FROM") || upper.starts_with("RSET") {
                rcpt.clear();
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("RCPT TO") {
                let addr = line
                    .split(['<', '>'])
                    .nth(1)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                rcpt.push(addr);
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("DATA") {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut code = String::new();
                loop {
                    if !next_line(&mut lines, &mut write, &mut line).await? {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    if code.is_empty() {
                        code = code_on_line(&line);
                    }
                }
                let at = Instant::now();
                self.received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for to in rcpt.drain(..) {
                    if let Some(tx) = self.waiting.lock().unwrap().remove(&to) {
                        let _ = tx.send(Delivery {
                            code: code.clone(),
                            at,
                        });
                    }
                }
                write.write_all(b"250 OK queued\r\n").await?;
            } else if upper.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                write.flush().await?;
                return Ok(());
            } else {
                write.write_all(b"502 not implemented\r\n").await?;
            }
        }
    }
}

/// Reads the next line into `line` (false at the end of the stream). Replies are written out
/// only when no pipelined command is waiting (as MTAs do), so a pipelined MAIL, RCPT and DATA
/// get their replies in one segment.
async fn next_line(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    line: &mut String,
) -> std::io::Result<bool> {
    line.clear();
    if lines.buffer().is_empty() {
        write.flush().await?;
    }
    Ok(lines.read_line(line).await? != 0)
}

/// The code where a line of the mail starts with it ("042137 is your Acme verification code.",
/// the first line of the text part), or nothing.
fn code_on_line(line: &str) -> String {
    let digits: String = line.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() >= 6 && line[digits.len()..].starts_with(" is your ") {
        digits
    } else {
        String::new()
    }
}
