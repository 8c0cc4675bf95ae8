use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn registry(eject_after: u32, base: Duration) -> HealthRegistry {
    HealthRegistry::new(
        HealthSettings {
            eject_after,
            base_ejection: base,
            max_ejection: base * 4,
            checks: checker::CheckSettings {
                healthy_threshold: 2,
                unhealthy_threshold: 2,
                ..Default::default()
            },
        },
        Arc::new(Metrics::new()),
    )
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 9, last], 80))
}

#[test]
fn ejects_after_k_failures_in_a_row_and_a_success_resets_the_count() {
    let r = registry(3, Duration::from_secs(60));
    assert!(r.all_healthy());
    assert!(!r.connect_failed(addr(1), None));
    assert!(!r.connect_failed(addr(1), None));
    assert!(!r.all_healthy(), "failures in a row are tracked");
    r.connect_succeeded(addr(1));
    assert!(r.all_healthy(), "a success clears the count");
    assert!(!r.connect_failed(addr(1), None));
    assert!(!r.connect_failed(addr(1), None));
    assert!(r.usable(addr(1)));
    assert!(
        r.connect_failed(addr(1), None),
        "third failure in a row ejects"
    );
    assert!(!r.usable(addr(1)));
    assert!(r.usable(addr(2)), "other endpoints are not affected");
    assert_eq!(r.view(addr(1)).state, "ejected");
    assert!(
        !r.connect_failed(addr(1), None),
        "already ejected: no second ejection"
    );
    assert_eq!(r.view(addr(1)).ejections, 1);
}

#[test]
fn backoff_doubles_while_failing_and_probation_re_ejects_at_once() {
    // Base 200 ms, maximum 800 ms: the lower bounds below leave 200 ms for a stalled machine.
    let r = registry(2, Duration::from_millis(200));
    r.connect_failed(addr(1), None);
    assert!(r.connect_failed(addr(1), None));
    let first = r.view(addr(1)).ejected_for_ms.unwrap();
    assert!(first <= 200, "{first}");
    std::thread::sleep(Duration::from_millis(250));
    assert!(r.usable(addr(1)), "usable again after the backoff");
    assert_eq!(r.view(addr(1)).state, "probation");
    assert!(!r.all_healthy(), "probation still needs lookups");
    assert!(
        r.connect_failed(addr(1), None),
        "one failure on probation ejects again"
    );
    let second = r.view(addr(1)).ejected_for_ms.unwrap();
    assert!(second > 200 && second <= 400, "doubled: {second}");
    std::thread::sleep(Duration::from_millis(450));
    assert!(r.connect_failed(addr(1), None));
    let third = r.view(addr(1)).ejected_for_ms.unwrap();
    assert!(third > 400 && third <= 800, "doubled again: {third}");
    std::thread::sleep(Duration::from_millis(850));
    assert!(r.connect_failed(addr(1), None));
    let fourth = r.view(addr(1)).ejected_for_ms.unwrap();
    assert!(fourth <= 800, "capped at the maximum: {fourth}");
    assert_eq!(r.view(addr(1)).ejections, 4);
    r.connect_succeeded(addr(1));
    assert_eq!(r.view(addr(1)).state, "healthy");
    assert_eq!(r.view(addr(1)).ejections, 0, "a success resets the backoff");
    assert!(r.all_healthy());
}

#[test]
fn zero_never_ejects() {
    let r = registry(0, Duration::from_secs(60));
    for _ in 0..100 {
        assert!(!r.connect_failed(addr(1), None));
    }
    assert!(r.usable(addr(1)));
}

#[test]
fn active_checks_use_thresholds_and_a_passing_probe_ends_an_ejection() {
    let r = registry(1, Duration::from_secs(60));
    r.set_checked(HashSet::from([addr(1), addr(2)]));
    r.check_result(addr(1), Err("refused".into()));
    assert!(r.usable(addr(1)), "one failure is below the threshold");
    r.check_result(addr(1), Err("refused".into()));
    assert!(!r.usable(addr(1)));
    let view = r.view(addr(1));
    assert_eq!(
        (view.state, view.check),
        ("unhealthy", CheckState::Unhealthy)
    );
    assert_eq!(view.check_error.as_deref(), Some("refused"));
    r.check_result(addr(1), Ok(()));
    assert!(
        !r.usable(addr(1)),
        "one pass is below the healthy threshold"
    );
    r.check_result(addr(1), Ok(()));
    assert!(r.usable(addr(1)));
    assert!(r.all_healthy());

    assert!(r.connect_failed(addr(2), None));
    assert!(!r.usable(addr(2)));
    r.check_result(addr(2), Ok(()));
    assert!(
        r.usable(addr(2)),
        "a passing probe returns an ejected endpoint"
    );
    assert!(r.all_healthy());

    // Checks stopped while unhealthy: the verdict no longer holds the endpoint out.
    r.check_result(addr(1), Err("refused".into()));
    r.check_result(addr(1), Err("refused".into()));
    assert!(!r.usable(addr(1)));
    r.checks_stopped(addr(1));
    assert!(r.usable(addr(1)));
    assert_eq!(r.view(addr(1)).check, CheckState::Unknown);
    assert!(r.all_healthy());
    // A late probe of an endpoint that is neither checked nor known is ignored.
    r.set_checked(HashSet::new());
    r.check_result(addr(3), Err("late".into()));
    assert_eq!(r.known(), 2);
}

#[test]
fn concurrent_failures_and_successes_never_hide_an_ejection() {
    let r = registry(2, Duration::from_secs(60));
    std::thread::scope(|s| {
        for t in 0..4 {
            let r = &r;
            s.spawn(move || {
                for i in 0..2000 {
                    if (i + t) % 3 == 0 {
                        r.connect_succeeded(addr(1));
                    } else {
                        r.connect_failed(addr(1), None);
                    }
                }
            });
        }
    });
    // Whatever the interleaving, the hint agrees with the endpoint's state.
    let view = r.view(addr(1));
    let trouble = view.consecutive_failures > 0 || view.state != "healthy";
    assert_eq!(!r.all_healthy(), trouble, "{view:?}");
    r.connect_succeeded(addr(1));
    assert!(r.all_healthy());
    assert!(r.usable(addr(1)));
}

#[test]
fn retain_forgets_endpoints_that_left_and_keeps_the_others() {
    let r = registry(1, Duration::from_secs(60));
    r.set_checked(HashSet::from([addr(2)]));
    r.connect_failed(addr(1), None);
    r.connect_failed(addr(2), None);
    r.check_result(addr(2), Err("x".into()));
    r.check_result(addr(2), Err("x".into()));
    assert_eq!(r.known(), 2);
    r.retain(&HashSet::from([HealthKey::tcp(addr(1))]));
    assert_eq!(r.known(), 1);
    assert!(
        !r.usable(addr(1)),
        "an endpoint that stays keeps its ejection"
    );
    r.connect_succeeded(addr(1));
    assert!(
        r.all_healthy(),
        "the hint was recounted: nothing troubled is left"
    );
}
