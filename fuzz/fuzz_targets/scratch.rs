// A scratch folder for this process (in memory where /dev/shm exists), made once.
fn scratch() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::path::Path::new("/dev/shm");
        let root = if root.is_dir() { root.to_path_buf() } else { std::env::temp_dir() };
        let d = root.join(format!("lorascope-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}
