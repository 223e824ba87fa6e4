//! Windows: a key file must not be readable by other accounts, the ACL counterpart of the
//! `mode & 0o077` check on Unix (as ssh does with its keys).
//!
//! Allowed to read: the file's owner, the account this process runs as, LocalSystem and the
//! Administrators group (both can take any file anyway). Any other account or group with an
//! allow entry that grants reading (FILE_READ_DATA, GENERIC_READ or GENERIC_ALL) makes the key
//! refused, naming the accounts and the `icacls` command that fixes it. A file without a DACL
//! (everyone has full access) is refused too. Deny entries are ignored: an allow entry for a
//! group still reaches its other members.
//!
//! Under wine the DACL is the one wine derives from the Unix mode bits (the owner, and Everyone
//! when "other" may read), which is what the wine tests exercise; real NTFS ACLs (inherited
//! entries for Users, Authenticated Users ...) are confirmed only on a real Windows host.

use std::ffi::c_void;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;

use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, GENERIC_ALL, GENERIC_READ, HANDLE, HLOCAL,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetNamedSecurityInfoW, SetEntriesInAclW, SetNamedSecurityInfoW,
    EXPLICIT_ACCESS_W, NO_MULTIPLE_TRUSTEE, SET_ACCESS, SE_FILE_OBJECT, TRUSTEE_IS_SID,
    TRUSTEE_IS_USER, TRUSTEE_W,
};
use windows_sys::Win32::Security::{
    EqualSid, GetAce, GetTokenInformation, IsWellKnownSid, LookupAccountSidW, TokenUser,
    WinBuiltinAdministratorsSid, WinLocalSystemSid, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL,
    DACL_SECURITY_INFORMATION, NO_INHERITANCE, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SID_NAME_USE, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_ALL_ACCESS, FILE_READ_DATA};
use windows_sys::Win32::System::SystemServices::ACCESS_ALLOWED_ACE_TYPE;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Why a key file's ACL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclProblem {
    /// The ACL could not be read (error code).
    Unreadable(u32),
    /// No DACL at all: everyone has full access.
    NoDacl,
    /// These accounts or groups may read it.
    Readers(Vec<String>),
}

impl std::fmt::Display for AclProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AclProblem::Unreadable(code) => write!(f, "its ACL cannot be read (error {code})"),
            AclProblem::NoDacl => write!(f, "it has no ACL at all (everyone has full access)"),
            AclProblem::Readers(who) => write!(f, "{} may read it", who.join(", ")),
        }
    }
}

const READ_RIGHTS: u32 = FILE_READ_DATA | GENERIC_READ | GENERIC_ALL;

/// Frees a buffer the security API allocated with LocalAlloc.
struct LocalBuffer(*mut c_void);

impl Drop for LocalBuffer {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the API that documents LocalFree for it.
            unsafe { LocalFree(self.0 as HLOCAL) };
        }
    }
}

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

fn from_wide(buf: &[u16]) -> String {
    let len = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..len])
}

/// "DOMAIN\name", or the SID string when the account cannot be looked up.
fn account_name(sid: PSID) -> String {
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut use_ = SID_NAME_USE::default();
    // SAFETY: buffers and their lengths in characters are passed as documented.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut use_,
        )
    };
    if ok != 0 {
        let (name, domain) = (from_wide(&name), from_wide(&domain));
        return if domain.is_empty() {
            name
        } else {
            format!("{domain}\\{name}")
        };
    }
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: the API allocates the string; LocalBuffer frees it.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } != 0 {
        let _free = LocalBuffer(text.cast());
        // SAFETY: a NUL-terminated string written by the API.
        let len = (0..).take_while(|&i| unsafe { *text.add(i) } != 0).count();
        // SAFETY: `len` characters were just read from it.
        return String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) });
    }
    "an unknown account".to_string()
}

/// The SID of the account this process runs as, in a buffer that owns it.
fn process_user() -> Option<Vec<u64>> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo handle of this process; token is an out-pointer closed below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let mut buf = vec![0u64; 64];
    let mut len = 0u32;
    // SAFETY: the buffer is 512 bytes, enough for TOKEN_USER and any SID; the length is passed.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    // SAFETY: the token handle was opened above.
    unsafe { CloseHandle(token) };
    (ok != 0).then_some(buf)
}

/// Checks the key file's ACL; `Ok` when only its owner (and the accounts that may read anything)
/// can read it.
pub fn check(path: &Path) -> Result<(), AclProblem> {
    let name = wide(path.as_os_str());
    let mut owner: PSID = std::ptr::null_mut();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: out-pointers into the descriptor the API allocates (freed by LocalBuffer).
    let rc = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    if rc != 0 {
        return Err(AclProblem::Unreadable(rc));
    }
    let _free = LocalBuffer(descriptor);
    if dacl.is_null() {
        return Err(AclProblem::NoDacl);
    }
    let user = process_user();
    // SAFETY: TOKEN_USER sits at the start of the buffer GetTokenInformation filled.
    let user_sid: PSID = user
        .as_ref()
        .map(|b| unsafe { (*(b.as_ptr() as *const TOKEN_USER)).User.Sid })
        .unwrap_or(std::ptr::null_mut());
    let mut readers = Vec::new();
    // SAFETY: dacl points into the live descriptor.
    let count = unsafe { (*dacl).AceCount };
    for index in 0..u32::from(count) {
        let mut ace: *mut c_void = std::ptr::null_mut();
        // SAFETY: index < AceCount; ace points into the descriptor.
        if unsafe { GetAce(dacl, index, &mut ace) } == 0 || ace.is_null() {
            continue;
        }
        // SAFETY: every ACE starts with an ACE_HEADER.
        let header = unsafe { *(ace as *const ACE_HEADER) };
        if u32::from(header.AceType) != ACCESS_ALLOWED_ACE_TYPE {
            continue;
        }
        let allowed = ace as *const ACCESS_ALLOWED_ACE;
        // SAFETY: an ACCESS_ALLOWED_ACE, whose SID starts at SidStart.
        let (mask, sid) = unsafe {
            (
                (*allowed).Mask,
                std::ptr::addr_of!((*allowed).SidStart) as PSID,
            )
        };
        if mask & READ_RIGHTS == 0 {
            continue;
        }
        // SAFETY: valid SIDs (or null, which EqualSid is never given).
        let trusted = unsafe {
            (!owner.is_null() && EqualSid(sid, owner) != 0)
                || (!user_sid.is_null() && EqualSid(sid, user_sid) != 0)
                || IsWellKnownSid(sid, WinLocalSystemSid) != 0
                || IsWellKnownSid(sid, WinBuiltinAdministratorsSid) != 0
        };
        if !trusted {
            let who = account_name(sid);
            if !readers.contains(&who) {
                readers.push(who);
            }
        }
    }
    if readers.is_empty() {
        Ok(())
    } else {
        Err(AclProblem::Readers(readers))
    }
}

/// Gives `path` an ACL of one entry, full control for the account this process runs as, and
/// removes inherited entries: what `keygen --out` writes, and what [`check`] accepts. Through the
/// ACL API rather than `icacls`, so no output parsing and no dependence on the account's name.
/// Under wine this sets the Unix mode to 0600, which the wine tests check through [`check`].
pub fn restrict_to_owner(path: &Path) -> Result<(), String> {
    let user = process_user().ok_or("cannot read this process's account")?;
    // SAFETY: TOKEN_USER sits at the start of the buffer GetTokenInformation filled.
    let sid = unsafe { (*(user.as_ptr() as *const TOKEN_USER)).User.Sid };
    let entry = EXPLICIT_ACCESS_W {
        grfAccessPermissions: FILE_ALL_ACCESS,
        grfAccessMode: SET_ACCESS,
        grfInheritance: NO_INHERITANCE,
        Trustee: TRUSTEE_W {
            pMultipleTrustee: std::ptr::null_mut(),
            MultipleTrusteeOperation: NO_MULTIPLE_TRUSTEE,
            TrusteeForm: TRUSTEE_IS_SID,
            TrusteeType: TRUSTEE_IS_USER,
            ptstrName: sid.cast(),
        },
    };
    let mut acl: *mut ACL = std::ptr::null_mut();
    // SAFETY: one entry; the new ACL is allocated by the API and freed by LocalBuffer.
    let rc = unsafe { SetEntriesInAclW(1, &entry, std::ptr::null(), &mut acl) };
    if rc != 0 {
        return Err(format!("SetEntriesInAclW failed (error {rc})"));
    }
    let _free = LocalBuffer(acl.cast());
    let name = wide(path.as_os_str());
    // SAFETY: a NUL-terminated path and the ACL built above; owner, group and SACL unchanged.
    let rc = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!("SetNamedSecurityInfoW failed (error {rc})"));
    }
    Ok(())
}
