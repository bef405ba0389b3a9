pub mod canary;
pub mod dns;
pub mod faultproxy;
pub mod formsite;
pub mod graphdouble;
pub mod idp;
pub mod mailstack;
pub mod receiver;
