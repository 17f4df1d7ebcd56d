//! The connections each client IP (the TCP peer) holds open on one listener, for
//! `limits.max_connections_per_ip`. The map only has entries for IPs with open connections,
//! so it is bounded by `max_connections`. Costs a lock per accept and per close, nothing per
//! request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
pub struct PerIp {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it holds `cap` already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: Arc::clone(self),
            ip,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Each update is one small change of one entry: the map is whole even after a panic.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open connection of an IP; given back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_ip_and_gives_slots_back() {
        let per_ip = Arc::new(PerIp::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = per_ip.enter(a);
        let a2 = per_ip.enter(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(per_ip.enter(a).is_none());
        assert!(per_ip.enter(b).is_some());
        drop(a1);
        let a3 = per_ip.enter(a);
        assert!(a3.is_some());
        drop((a2, a3));
        assert!(!per_ip.lock().contains_key(&a));
    }
}
