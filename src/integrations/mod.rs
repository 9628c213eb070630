//! What other programs consume or judge: health checks, boot-time files,
//! libvirt node devices, Nova configuration, udev rules.

pub mod boot_files;
pub mod check;
pub mod nodedev;
pub mod nova;
pub mod udev;
