//! Config files: any text either fails with problems to report or yields a config from
//! which every part of the gateway can be built (their constructors assume a valid one).
#![no_main]

use hubgate::proxy::callers::Callers;
use hubgate::hubspot::Classifier;
use hubgate::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let config = match Config::from_toml(text) {
        Ok(config) => config,
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused config names its problems");
            return;
        }
    };
    let _ = config.budgets.limits();
    config
        .upstream_target()
        .expect("a validated base_url is a usable target");
    hubgate::ops::admin::health_url(&config.server.admin_listen)
        .expect("a validated admin_listen has a /healthz URL");
    let _ = Classifier::new(&config.budgets.exempt);
    let _ = Callers::new(&config.callers, &config.inbound);
});
