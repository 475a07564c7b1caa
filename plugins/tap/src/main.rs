//! The `tap` CNI plugin.
fn main() {
    // Started by the plugin itself to create a tap in an SELinux label (`selinuxContext`).
    if let Ok(spec) = std::env::var(tap::HELPER_ENV) {
        std::process::exit(tap::helper_main(&spec));
    }
    cni::skel::run(tap::Tap)
}
