//! The kernel and initramfs QEMU test guests boot: Debian's
//! `linux-image-amd64` kernel from /boot, and a small busybox initramfs
//! built here (busybox, the modules virtio-net needs, iperf3 with its
//! shared libraries, `tests/guest/qemu-init.sh` as /init).

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::transports::need;
use crate::util::{output, run};

/// The guest's init, built into the initramfs.
const INIT: &str = include_str!("../../guest/qemu-init.sh");

/// The modules the guest's NIC needs (with what they depend on), when the
/// kernel has them as modules rather than built in.
const NIC_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// Busybox applets the init uses.
const APPLETS: [&str; 8] = [
    "sh", "insmod", "ip", "ping", "mount", "sleep", "poweroff", "cat",
];

/// A bootable guest: Debian's kernel and the test initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The kernel QEMU boots: `/boot/vmlinuz-VERSION` unpacked to an ELF
    /// file in the build directory (booted through its PVH entry point,
    /// which spares the guest decompressing it), or the bzImage itself
    /// when it cannot be unpacked.
    pub kernel: PathBuf,
    /// The initramfs (gzip-compressed newc cpio) in the build directory.
    pub initrd: PathBuf,
}

impl GuestImage {
    /// Finds the kernel and builds the initramfs into `dir`, unless a
    /// build for the same kernel, init and tools is already there (a
    /// marker file says so). Safe to call from parallel tests: each build
    /// happens in its own staging directory and is renamed into place.
    pub fn build(dir: &Path) -> Result<GuestImage> {
        let (kernel, version) = find_kernel()?;
        let modules_dir = Path::new("/lib/modules").join(&version);
        let busybox = need("busybox", "busybox-static")?;
        let iperf3 = need("iperf3", "iperf3")?;
        let key = cache_key(&[
            &version,
            INIT,
            &busybox.display().to_string(),
            &iperf3.display().to_string(),
        ]);
        let initrd = dir.join(format!("initrd-{key}.cpio.gz"));
        let marker = dir.join(format!("initrd-{key}.ok"));
        if let Ok(known) = fs::read_to_string(&marker) {
            let kernel = PathBuf::from(known.lines().next().unwrap_or_default());
            if kernel.is_file() && initrd.is_file() {
                return Ok(GuestImage { kernel, initrd });
            }
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        remove_stale(dir, &[&key, &version]);
        let stage = dir.join(format!("stage-{}", unique_suffix()));
        let built = build_initrd(&stage, &modules_dir, &busybox, &iperf3);
        let _ = fs::remove_dir_all(&stage);
        let tmp = built?;
        fs::rename(&tmp, &initrd)
            .with_context(|| format!("renaming {} to {}", tmp.display(), initrd.display()))?;
        let kernel = match extract_vmlinux(&kernel, &version, dir) {
            Ok(elf) => elf,
            Err(e) => {
                eprintln!("booting the compressed {} ({e:#})", kernel.display());
                kernel
            }
        };
        fs::write(
            &marker,
            format!("{}\n{}\n", kernel.display(), initrd.display()),
        )
        .with_context(|| format!("writing {}", marker.display()))?;
        Ok(GuestImage { kernel, initrd })
    }

    /// [`GuestImage::build`] in a directory under the system's temp dir
    /// shared by every test run on this machine (about 70 MB, rebuilt only
    /// when the kernel, the init or the tools change).
    pub fn shared() -> Result<GuestImage> {
        GuestImage::build(&std::env::temp_dir().join("switchyard-qemu-guest"))
    }
}

/// How old a cached file of another build must be before a build removes
/// it: test runs of other checkouts may be using it right now.
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Removes what builds for another kernel, init or tools left (files
/// whose names contain none of `keep`) once they are [`STALE_AFTER`] old.
fn remove_stale(dir: &Path, keep: &[&str]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("initrd-") || name.starts_with("vmlinux-");
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if ours && old && !keep.iter().any(|k| name.contains(k)) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The uncompressed kernel inside `/boot/vmlinuz-VERSION`, as an ELF file
/// QEMU boots directly through its PVH entry point (`vmlinux-VERSION` in
/// `dir`, shared by the builds of every init). Under TCG this halves
/// the boot: the guest no longer decompresses 60 MB of kernel in emulated
/// code. Needs CONFIG_PVH (Debian's kernels have it) and an xz-compressed
/// bzImage (Debian's are).
fn extract_vmlinux(bzimage: &Path, version: &str, dir: &Path) -> Result<PathBuf> {
    let elf = dir.join(format!("vmlinux-{version}"));
    if elf.is_file() {
        return Ok(elf);
    }
    let config = fs::read_to_string(format!("/boot/config-{version}")).unwrap_or_default();
    if !config.lines().any(|l| l == "CONFIG_PVH=y") {
        bail!("the kernel has no PVH entry point (CONFIG_PVH)");
    }
    let data = fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let magic = [0xfd, b'7', b'z', b'X', b'Z', 0];
    let at = data
        .windows(magic.len())
        .position(|w| w == magic)
        .context("no xz stream in the bzImage")?;
    let xz = need("xz", "xz-utils")?;
    let payload = dir.join(format!("vmlinux-{version}.xz.{}", unique_suffix()));
    let tmp = dir.join(format!("vmlinux-{version}.{}", unique_suffix()));
    fs::write(&payload, &data[at..]).with_context(|| format!("writing {}", payload.display()))?;
    let unpacked = unpack_xz(&xz, &payload, &tmp);
    let _ = fs::remove_file(&payload);
    if let Err(e) = unpacked {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &elf)
        .with_context(|| format!("renaming {} to {}", tmp.display(), elf.display()))?;
    Ok(elf)
}

/// `xz -dc --single-stream SRC > DST` (what follows the stream in the
/// bzImage is not xz), then checks that DST is an ELF file.
fn unpack_xz(xz: &Path, src: &Path, dst: &Path) -> Result<()> {
    let out = fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let status = Command::new(xz)
        .args(["-dc", "--single-stream"])
        .arg(src)
        .stdout(out)
        .status()
        .with_context(|| format!("running {}", xz.display()))?;
    if !status.success() {
        bail!("xz could not unpack the kernel ({status})");
    }
    let mut head = [0u8; 4];
    let mut f = fs::File::open(dst).with_context(|| format!("opening {}", dst.display()))?;
    f.read_exact(&mut head)
        .context("reading the unpacked kernel")?;
    if head != *b"\x7fELF" {
        bail!("the unpacked kernel is not an ELF file");
    }
    Ok(())
}

fn unique_suffix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, AtomicOrdering::Relaxed)
    )
}

fn cache_key(parts: &[&str]) -> String {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The newest `/boot/vmlinuz-VERSION` that has `/lib/modules/VERSION`.
fn find_kernel() -> Result<(PathBuf, String)> {
    let missing = || {
        anyhow!(
            "no kernel for QEMU guests: /boot has no vmlinuz-* with a module tree in \
             /lib/modules (Debian package: linux-image-amd64; tests/run.sh installs it)"
        )
    };
    let entries = fs::read_dir("/boot").map_err(|_| missing())?;
    let mut versions: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(str::to_string)
        })
        .filter(|v| {
            Path::new("/lib/modules")
                .join(v)
                .join("modules.dep")
                .is_file()
        })
        .collect();
    versions.sort_by(|a, b| natural_cmp(a, b));
    let version = versions.pop().ok_or_else(missing)?;
    Ok((PathBuf::from(format!("/boot/vmlinuz-{version}")), version))
}

/// Compares version strings with digit runs as numbers (6.1.0-9 < 6.1.0-57).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, m), (true, n)) => m
                .trim_start_matches('0')
                .len()
                .cmp(&n.trim_start_matches('0').len())
                .then_with(|| m.trim_start_matches('0').cmp(n.trim_start_matches('0'))),
            ((_, m), (_, n)) => m.cmp(n),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Module paths (relative to the module tree) to load, dependencies first.
/// A wanted module the kernel has built in (modules.builtin) is skipped.
fn module_load_order(modules_dir: &Path) -> Result<Vec<String>> {
    let dep_path = modules_dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_path)
        .with_context(|| format!("reading {} (linux-image-amd64)", dep_path.display()))?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let table: Vec<(&str, Vec<&str>)> = deps
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
        .collect();
    let mut order = Vec::new();
    for want in NIC_MODULES {
        let is_named = |path: &str| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.split('.').next() == Some(want)
        };
        if let Some((path, _)) = table.iter().find(|(m, _)| is_named(m)) {
            visit(path, &table, &mut order, 0)?;
        } else if !builtin.lines().any(is_named) {
            bail!(
                "kernel module {want} is neither in {} nor built in; is linux-image-amd64 complete?",
                dep_path.display()
            );
        }
    }
    Ok(order)
}

/// Depth-first: a module's dependencies before the module.
fn visit(
    module: &str,
    table: &[(&str, Vec<&str>)],
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if depth > 32 {
        bail!("module dependencies of {module} do not end (modules.dep loops?)");
    }
    if order.iter().any(|m| m == module) {
        return Ok(());
    }
    let deps = table
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    for d in deps {
        visit(d, table, order, depth + 1)?;
    }
    order.push(module.to_string());
    Ok(())
}

/// Fills `stage` and packs it; returns the packed file (inside `stage`'s
/// parent, renamed into place by the caller).
fn build_initrd(
    stage: &Path,
    modules_dir: &Path,
    busybox: &Path,
    iperf3: &Path,
) -> Result<PathBuf> {
    need("cpio", "cpio")?;
    need("gzip", "gzip")?;
    for d in ["bin", "dev", "proc", "sys", "tmp", "modules"] {
        fs::create_dir_all(stage.join(d))
            .with_context(|| format!("creating {}", stage.join(d).display()))?;
    }
    check_applets(busybox)?;
    copy_executable(busybox, &stage.join("bin/busybox"))?;
    copy_executable(iperf3, &stage.join("bin/iperf3"))?;
    for binary in [busybox, iperf3] {
        for lib in shared_libraries(binary)? {
            let dst = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
            copy_executable(&lib, &dst)?;
        }
    }
    let mut order = String::new();
    for m in module_load_order(modules_dir)? {
        let name = copy_module(&modules_dir.join(&m), &stage.join("modules"))?;
        order.push_str(&name);
        order.push('\n');
    }
    write_file(&stage.join("modules/order"), &order, 0o644)?;
    write_file(&stage.join("init"), INIT, 0o755)?;
    let packed = stage.with_extension("cpio.gz");
    let mut cmd = Command::new("sh");
    cmd.current_dir(stage)
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6 > \"$1\"")
        .arg("sh")
        .arg(&packed);
    run(&mut cmd).context("packing the guest initramfs (cpio, gzip)")?;
    Ok(packed)
}

fn check_applets(busybox: &Path) -> Result<()> {
    let list = run(Command::new(busybox).arg("--list"))?;
    let missing: Vec<&str> = APPLETS
        .iter()
        .copied()
        .filter(|a| !list.lines().any(|l| l.trim() == *a))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} lacks the applets {missing:?} the guest init needs (Debian package: busybox-static)",
            busybox.display()
        );
    }
    Ok(())
}

/// The shared libraries `binary` loads, by `ldd` (none for a static one).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = output(Command::new("ldd").arg(binary))?;
    if !out.status.success() {
        // "not a dynamic executable": a static binary needs nothing.
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies a module into `dir` under its file name, uncompressed (busybox
/// insmod takes plain ELF objects); returns that name.
fn copy_module(src: &Path, dir: &Path) -> Result<String> {
    let file = src
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .with_context(|| format!("module path {} has no file name", src.display()))?;
    let (name, decompress) = if let Some(base) = file.strip_suffix(".xz") {
        (base.to_string(), Some(("xz", "xz-utils")))
    } else if let Some(base) = file.strip_suffix(".zst") {
        (base.to_string(), Some(("zstd", "zstd")))
    } else {
        (file.clone(), None)
    };
    let dst = dir.join(&name);
    match decompress {
        None => {
            fs::copy(src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
        Some((tool, package)) => {
            let tool = need(tool, package)?;
            let out =
                fs::File::create(&dst).with_context(|| format!("creating {}", dst.display()))?;
            let status = Command::new(&tool)
                .arg("-dc")
                .arg(src)
                .stdout(out)
                .status()
                .with_context(|| format!("running {}", tool.display()))?;
            if !status.success() {
                bail!("{} -dc {} failed ({status})", tool.display(), src.display());
            }
        }
    }
    Ok(name)
}

fn copy_executable(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dst.display()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{natural_cmp, parse_ldd};
    use std::cmp::Ordering;
    use std::path::PathBuf;

    #[test]
    fn kernel_versions_compare_by_number() {
        assert_eq!(
            natural_cmp("6.1.0-9-amd64", "6.1.0-57-amd64"),
            Ordering::Less
        );
        assert_eq!(
            natural_cmp("6.10.0-1-amd64", "6.9.0-1-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            natural_cmp("6.1.0-57-amd64", "6.1.0-57-amd64"),
            Ordering::Equal
        );
    }

    #[test]
    fn ldd_output_gives_the_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007f0f76630000)\n\
                    \tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x00007f0f765e9000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0f76632000)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libiperf.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
