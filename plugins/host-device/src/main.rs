//! The `host-device` CNI plugin.
fn main() {
    cni::skel::run(host_device::HostDevice)
}
