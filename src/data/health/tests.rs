use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let t = Instant::now();
    assert!(r.all_healthy());
    assert!(!r.connect_failed(addr(1), None, t));
    assert!(!r.connect_failed(addr(1), None, t));
    assert!(!r.all_healthy(), "failures in a row are tracked");
    r.connect_succeeded(addr(1));
    assert!(r.all_healthy(), "a success clears the count");
    assert!(!r.connect_failed(addr(1), None, t));
    assert!(!r.connect_failed(addr(1), None, t));
    assert!(r.usable(addr(1), t));
    assert!(
        r.connect_failed(addr(1), None, t),
        "third failure in a row ejects"
    );
    assert!(!r.usable(addr(1), t));
    assert!(r.usable(addr(2), t), "other endpoints are not affected");
    assert_eq!(r.view(addr(1), t).state, "ejected");
    assert!(
        !r.connect_failed(addr(1), None, t),
        "already ejected: no second ejection"
    );
    assert_eq!(r.view(addr(1), t).ejections, 1);
}

#[test]
fn backoff_doubles_while_failing_and_probation_re_ejects_at_once() {
    // Base 200 ms, maximum 800 ms; time is stepped, not slept.
    let r = registry(2, Duration::from_millis(200));
    let t = Instant::now();
    r.connect_failed(addr(1), None, t);
    assert!(r.connect_failed(addr(1), None, t));
    assert_eq!(r.view(addr(1), t).ejected_for_ms, Some(200));
    assert!(!r.usable(addr(1), t + Duration::from_millis(199)));
    let t = t + Duration::from_millis(200);
    assert!(r.usable(addr(1), t), "usable again after the backoff");
    assert_eq!(r.view(addr(1), t).state, "probation");
    assert!(!r.all_healthy(), "probation still needs lookups");
    assert!(
        r.connect_failed(addr(1), None, t),
        "one failure on probation ejects again"
    );
    assert_eq!(r.view(addr(1), t).ejected_for_ms, Some(400), "doubled");
    let t = t + Duration::from_millis(400);
    assert!(r.connect_failed(addr(1), None, t));
    assert_eq!(
        r.view(addr(1), t).ejected_for_ms,
        Some(800),
        "doubled again"
    );
    let t = t + Duration::from_millis(800);
    assert!(r.connect_failed(addr(1), None, t));
    assert_eq!(
        r.view(addr(1), t).ejected_for_ms,
        Some(800),
        "capped at the maximum"
    );
    assert_eq!(r.view(addr(1), t).ejections, 4);
    r.connect_succeeded(addr(1));
    assert_eq!(r.view(addr(1), t).state, "healthy");
    assert_eq!(
        r.view(addr(1), t).ejections,
        0,
        "a success resets the backoff"
    );
    assert!(r.all_healthy());
}

#[test]
fn zero_never_ejects() {
    let r = registry(0, Duration::from_secs(60));
    let t = Instant::now();
    for _ in 0..100 {
        assert!(!r.connect_failed(addr(1), None, t));
    }
    assert!(r.usable(addr(1), t));
}

#[test]
fn active_checks_use_thresholds_and_a_passing_probe_ends_an_ejection() {
    let r = registry(1, Duration::from_secs(60));
    let t = Instant::now();
    r.set_checked(HashSet::from([addr(1), addr(2)]));
    r.check_result(addr(1), Err("refused".into()));
    assert!(r.usable(addr(1), t), "one failure is below the threshold");
    r.check_result(addr(1), Err("refused".into()));
    assert!(!r.usable(addr(1), t));
    let view = r.view(addr(1), t);
    assert_eq!(
        (view.state, view.check),
        ("unhealthy", CheckState::Unhealthy)
    );
    assert_eq!(view.check_error.as_deref(), Some("refused"));
    r.check_result(addr(1), Ok(()));
    assert!(
        !r.usable(addr(1), t),
        "one pass is below the healthy threshold"
    );
    r.check_result(addr(1), Ok(()));
    assert!(r.usable(addr(1), t));
    assert!(r.all_healthy());

    assert!(r.connect_failed(addr(2), None, t));
    assert!(!r.usable(addr(2), t));
    r.check_result(addr(2), Ok(()));
    assert!(
        r.usable(addr(2), t),
        "a passing probe returns an ejected endpoint"
    );
    assert!(r.all_healthy());

    // Checks stopped while unhealthy: the verdict no longer holds the endpoint out.
    r.check_result(addr(1), Err("refused".into()));
    r.check_result(addr(1), Err("refused".into()));
    assert!(!r.usable(addr(1), t));
    r.checks_stopped(addr(1));
    assert!(r.usable(addr(1), t));
    assert_eq!(r.view(addr(1), t).check, CheckState::Unknown);
    assert!(r.all_healthy());
    // A late probe of an endpoint that is neither checked nor known is ignored.
    r.set_checked(HashSet::new());
    r.check_result(addr(3), Err("late".into()));
    assert_eq!(r.known(), 2);
}

#[test]
fn concurrent_failures_and_successes_never_hide_an_ejection() {
    let r = registry(2, Duration::from_secs(60));
    let t = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let r = &r;
            s.spawn(move || {
                for i in 0..2000 {
                    if (i + t) % 3 == 0 {
                        r.connect_succeeded(addr(1));
                    } else {
                        r.connect_failed(addr(1), None, Instant::now());
                    }
                }
            });
        }
    });
    // Whatever the interleaving, the hint agrees with the endpoint's state.
    let view = r.view(addr(1), t);
    let trouble = view.consecutive_failures > 0 || view.state != "healthy";
    assert_eq!(!r.all_healthy(), trouble, "{view:?}");
    r.connect_succeeded(addr(1));
    assert!(r.all_healthy());
    assert!(r.usable(addr(1), t));
}

#[test]
fn retain_forgets_endpoints_that_left_and_keeps_the_others() {
    let r = registry(1, Duration::from_secs(60));
    let t = Instant::now();
    r.set_checked(HashSet::from([addr(2)]));
    r.connect_failed(addr(1), None, t);
    r.connect_failed(addr(2), None, t);
    r.check_result(addr(2), Err("x".into()));
    r.check_result(addr(2), Err("x".into()));
    assert_eq!(r.known(), 2);
    r.retain(&HashSet::from([HealthKey::tcp(addr(1))]));
    assert_eq!(r.known(), 1);
    assert!(
        !r.usable(addr(1), t),
        "an endpoint that stays keeps its ejection"
    );
    r.connect_succeeded(addr(1));
    assert!(
        r.all_healthy(),
        "the hint was recounted: nothing troubled is left"
    );
}

#[test]
fn ejection_backoff_doubles_per_ejection_up_to_the_maximum_and_zero_never_ejects() {
    let settings = |eject_after| HealthSettings {
        eject_after,
        base_ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(300),
        checks: checker::CheckSettings::default(),
    };
    let s = settings(3);
    assert_eq!(ejection_backoff(&s, 2, 0), None, "below the count");
    assert_eq!(ejection_backoff(&s, 3, 0), Some(Duration::from_secs(30)));
    assert_eq!(ejection_backoff(&s, 3, 1), Some(Duration::from_secs(60)));
    assert_eq!(ejection_backoff(&s, 9, 3), Some(Duration::from_secs(240)));
    assert_eq!(ejection_backoff(&s, 3, 4), Some(Duration::from_secs(300)));
    assert_eq!(ejection_backoff(&s, 3, 40), Some(Duration::from_secs(300)));
    assert_eq!(ejection_backoff(&settings(0), 1000, 0), None);
}

#[test]
fn check_step_needs_the_thresholds_in_a_row_both_ways() {
    use CheckState::*;
    let checks = checker::CheckSettings {
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        ..Default::default()
    };
    let step = |before, passed, n| check_step(before, passed, n, &checks);
    assert_eq!(step(Unknown, true, 1), Healthy, "the first pass judges");
    assert_eq!(step(Unknown, false, 2), Unknown);
    assert_eq!(step(Unknown, false, 3), Unhealthy);
    assert_eq!(step(Healthy, false, 2), Healthy);
    assert_eq!(step(Healthy, false, 3), Unhealthy);
    assert_eq!(step(Unhealthy, true, 1), Unhealthy);
    assert_eq!(step(Unhealthy, true, 2), Healthy);
    assert_eq!(step(Unhealthy, false, 9), Unhealthy);
}
