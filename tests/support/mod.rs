pub mod canary;
pub mod formsite;
pub mod graphdouble;
pub mod idp;
pub mod mailstack;
pub mod receiver;
