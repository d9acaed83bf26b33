//! The web configuration file (`--web.config.file`, the exporter-toolkit's
//! YAML).
#![no_main]

use keepalive_agent::api::web::config::WebConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = WebConfigFile::parse(std::path::Path::new("/etc/keepalive-agent/web.yml"), text);
    }
});
