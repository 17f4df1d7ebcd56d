//! Capacity: a policy holds `max_keys` clients at once. Clients that spent their budget stay
//! refused however many other clients the store holds, up to `max_keys`, for every algorithm:
//! none is pushed out (and handed a fresh budget) before the store is full.

use std::sync::Arc;

use portcullis_test::TestClient;

use crate::support::{bounded, config, get, start};

/// Requests in flight at once.
const CONCURRENCY: usize = 8;

/// `(algorithm, max_keys, distinct clients)`: below, near and at `max_keys`, across the sizes
/// where the old store's geometry lost keys (it held 64 of 100 and 512 of 1 000).
const CASES: [(&str, usize, usize); 8] = [
    ("token_bucket", 1000, 400),
    ("sliding_window", 1000, 400),
    ("fixed_window", 1000, 400),
    ("token_bucket", 1000, 1000),
    ("sliding_window", 100, 90),
    ("fixed_window", 100, 100),
    ("token_bucket", 9, 9),
    ("token_bucket", 2000, 1800),
];

/// Sends one GET per client (`x-api-key: client-N`) to `url`, `CONCURRENCY` at a time;
/// returns how many got 200 and how many got 429 (any other status fails the test).
async fn pass(client: &TestClient, url: &Arc<String>, clients: usize) -> (usize, usize) {
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for i in (w..clients).step_by(CONCURRENCY) {
                    let key = format!("client-{i}");
                    let resp = get(&client, &url, &[("x-api-key", &key)]).await;
                    match resp.status.as_u16() {
                        200 => ok += 1,
                        429 => refused += 1,
                        other => panic!("{url} {key}: status {other}: {}", resp.text()),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let mut total = (0, 0);
    for w in workers {
        let (ok, refused) = w.await.expect("worker");
        total = (total.0 + ok, total.1 + refused);
    }
    total
}

#[tokio::test]
async fn distinct_clients_up_to_max_keys_stay_refused_on_a_second_pass() {
    bounded(async {
        let mut policies = String::new();
        let mut routes = String::new();
        for (i, (algorithm, max_keys, _)) in CASES.iter().enumerate() {
            policies.push_str(&format!(
                "  - {{ name: p{i}, algorithm: {algorithm}, limit: 1, window: 1h, \
                 key: [{{ header: x-api-key }}], max_keys: {max_keys} }}\n"
            ));
            routes.push_str(&format!(
                "  - name: r{i}\n    match: {{ path: {{ exact: /{i} }} }}\n    \
                 rate_limits: [p{i}]\n    action: {{ respond: {{ status: 200, body: hi }} }}\n"
            ));
        }
        let gw = start(&config(None, &policies, &routes)).await;
        let client = TestClient::http1();
        for (i, (algorithm, max_keys, clients)) in CASES.into_iter().enumerate() {
            let url = Arc::new(gw.url("main", &format!("/{i}")));
            let case = format!("{algorithm}, max_keys {max_keys}, {clients} clients");
            assert_eq!(pass(&client, &url, clients).await, (clients, 0), "{case}");
            // Every client spent its 1 per hour: the second pass is refused in full.
            assert_eq!(pass(&client, &url, clients).await, (0, clients), "{case}");
        }
    })
    .await;
}
