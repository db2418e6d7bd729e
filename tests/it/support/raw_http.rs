//! Reading HTTP/1.1 requests by hand, for test servers that decide every byte they answer.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads the next request from `stream` (its head, then `Content-Length` bytes of body),
/// keeping what arrived beyond it in `pending` for the next call. Returns the body, or
/// `None` once the stream ends or fails.
pub async fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, pending).await?;
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while pending.len() < head_end + length {
        read_more(stream, pending).await?;
    }
    let body = pending[head_end..head_end + length].to_vec();
    pending.drain(..head_end + length);
    Some(body)
}

async fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            pending.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
