//! DNS: resolving endpoint host names and resolving them again every `dns_refresh`.
