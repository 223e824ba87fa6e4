//! [`LocalDtc`] on Windows: this host's MSDTC through its COM proxy (xolehlp.dll), the way
//! System.Transactions' DtcProxyShim and DTCTester's ODBC enlistment reach it.
//!
//! DtcGetTransactionManagerExW(NULL host = this machine) -> ITransactionDispenser;
//! BeginTransaction (read committed) -> ITransaction; QueryInterface -> ITransactionExportFactory;
//! Create(whereabouts) -> ITransactionExport; Export + GetTransactionCookie -> the cookie SQL
//! Server imports; ITransaction::Abort at the end.
//!
//! CONFIRMED ONLY ON A REAL WINDOWS HOST: this compiles for x86_64-pc-windows-gnu, but MSDTC
//! does not exist under wine or on Linux, so nothing here runs in CI. The opt-in test
//! `mssql_enlist_real` (tests/mssql_enlist.rs, docs/mssql.md) is how it is confirmed.
//!
//! The interfaces are called through their vtables (windows-sys has the functions and
//! constants, not COM interfaces); layouts are from transact.h / txcoord.h / txdtc.h.

use std::ffi::c_void;
use std::ptr;

use windows_sys::core::{GUID, HRESULT};
use windows_sys::Win32::System::Com::{CoInitializeEx, COINIT_MULTITHREADED};
use windows_sys::Win32::System::DistributedTransactionCoordinator::DtcGetTransactionManagerExW;

use super::dtc::{DtcError, LocalDtc, LocalTransaction};

const IID_ITRANSACTION_DISPENSER: GUID = GUID::from_u128(0x3a6ad9e1_23b9_11cf_ad60_00aa00a74ccd);
const IID_ITRANSACTION_EXPORT_FACTORY: GUID =
    GUID::from_u128(0xe1cf9b53_8745_11ce_a9ba_00aa006c3706);

/// ISOLATIONLEVEL_READCOMMITTED, what TransactionScope uses by default in DTC terms.
const ISOLATION_READ_COMMITTED: i32 = 0x1000;

#[repr(C)]
struct IUnknownVtbl {
    query_interface:
        unsafe extern "system" fn(*mut c_void, *const GUID, *mut *mut c_void) -> HRESULT,
    add_ref: unsafe extern "system" fn(*mut c_void) -> u32,
    release: unsafe extern "system" fn(*mut c_void) -> u32,
}

#[repr(C)]
struct ITransactionDispenserVtbl {
    base: IUnknownVtbl,
    get_options_object: unsafe extern "system" fn(*mut c_void, *mut *mut c_void) -> HRESULT,
    begin_transaction: unsafe extern "system" fn(
        *mut c_void,
        *mut c_void,
        i32,
        u32,
        *mut c_void,
        *mut *mut c_void,
    ) -> HRESULT,
}

#[repr(C)]
struct XactTransInfo {
    uow: [u8; 16],
    iso_level: i32,
    iso_flags: u32,
    grf_tc_supported: u32,
    grf_rm_supported: u32,
    grf_tc_supported_retaining: u32,
    grf_rm_supported_retaining: u32,
}

#[repr(C)]
struct ITransactionVtbl {
    base: IUnknownVtbl,
    commit: unsafe extern "system" fn(*mut c_void, i32, u32, u32) -> HRESULT,
    abort: unsafe extern "system" fn(*mut c_void, *mut c_void, i32, i32) -> HRESULT,
    get_transaction_info: unsafe extern "system" fn(*mut c_void, *mut XactTransInfo) -> HRESULT,
}

#[repr(C)]
struct ITransactionExportFactoryVtbl {
    base: IUnknownVtbl,
    get_remote_class_id: unsafe extern "system" fn(*mut c_void, *mut GUID) -> HRESULT,
    create: unsafe extern "system" fn(*mut c_void, u32, *const u8, *mut *mut c_void) -> HRESULT,
}

#[repr(C)]
struct ITransactionExportVtbl {
    base: IUnknownVtbl,
    export: unsafe extern "system" fn(*mut c_void, *mut c_void, *mut u32) -> HRESULT,
    get_transaction_cookie:
        unsafe extern "system" fn(*mut c_void, *mut c_void, u32, *mut u8, *mut u32) -> HRESULT,
}

/// An owned COM interface pointer, released on drop.
struct Com(*mut c_void);

impl Com {
    /// # Safety
    /// `self.0` must be an interface whose vtable starts with `V`.
    unsafe fn vtbl<V>(&self) -> &V {
        &**(self.0 as *mut *const V)
    }
}

impl Drop for Com {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: every Com holds a live interface pointer obtained from COM.
            unsafe { (self.vtbl::<IUnknownVtbl>().release)(self.0) };
        }
    }
}

// SAFETY: the MSDTC proxy's objects are free-threaded (the thread joins the multithreaded
// apartment before any call), so they may move between the blocking threads the hop uses.
unsafe impl Send for Com {}
unsafe impl Sync for Com {}

fn check(call: &'static str, hr: HRESULT) -> Result<(), DtcError> {
    if hr < 0 {
        Err(DtcError {
            call,
            hresult: hr as u32,
        })
    } else {
        Ok(())
    }
}

fn join_mta() {
    // S_FALSE (already initialised) and RPC_E_CHANGED_MODE are both fine for our calls.
    // SAFETY: plain Win32 call with a null reserved pointer.
    unsafe {
        CoInitializeEx(ptr::null(), COINIT_MULTITHREADED as u32);
    }
}

/// This host's MSDTC.
pub struct WindowsDtc;

impl LocalDtc for WindowsDtc {
    fn begin(&self) -> Result<Box<dyn LocalTransaction>, DtcError> {
        Ok(Box::new(begin_transaction()?))
    }
}

/// DtcGetTransactionManagerExW, BeginTransaction, GetTransactionInfo.
fn begin_transaction() -> Result<WindowsTransaction, DtcError> {
    join_mta();
    let mut dispenser: *mut c_void = ptr::null_mut();
    // SAFETY: null host and TM name select this machine's MSDTC; the out pointer is valid.
    let hr = unsafe {
        DtcGetTransactionManagerExW(
            ptr::null(),
            ptr::null(),
            &IID_ITRANSACTION_DISPENSER,
            0,
            ptr::null_mut(),
            &mut dispenser,
        )
    };
    check("DtcGetTransactionManagerExW", hr)?;
    let dispenser = Com(dispenser);
    let mut tx: *mut c_void = ptr::null_mut();
    // SAFETY: `dispenser` is an ITransactionDispenser (asked for by IID above).
    let hr = unsafe {
        (dispenser
            .vtbl::<ITransactionDispenserVtbl>()
            .begin_transaction)(
            dispenser.0,
            ptr::null_mut(),
            ISOLATION_READ_COMMITTED,
            0,
            ptr::null_mut(),
            &mut tx,
        )
    };
    check("ITransactionDispenser::BeginTransaction", hr)?;
    let tx = Com(tx);
    let mut info = XactTransInfo {
        uow: [0; 16],
        iso_level: 0,
        iso_flags: 0,
        grf_tc_supported: 0,
        grf_rm_supported: 0,
        grf_tc_supported_retaining: 0,
        grf_rm_supported_retaining: 0,
    };
    // SAFETY: `tx` is an ITransaction; `info` is a properly laid out XACTTRANSINFO.
    let hr = unsafe { (tx.vtbl::<ITransactionVtbl>().get_transaction_info)(tx.0, &mut info) };
    let (id, iso_level) = if hr >= 0 {
        (guid_text(&info.uow), Some(info.iso_level))
    } else {
        (String::new(), None)
    };
    Ok(WindowsTransaction {
        dispenser,
        tx,
        id,
        iso_level,
    })
}

/// The unit of work as a GUID string (a BOID holds a GUID's bytes).
fn guid_text(b: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let d2 = u16::from_le_bytes([b[4], b[5]]);
    let d3 = u16::from_le_bytes([b[6], b[7]]);
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

struct WindowsTransaction {
    dispenser: Com,
    tx: Com,
    id: String,
    /// The isolation level GetTransactionInfo reported (`None` when it failed): the level
    /// BeginTransaction was asked for, read back. Only the wine test reads it (it shows the
    /// call reached GetTransactionInfo's slot).
    #[cfg_attr(not(test), allow(dead_code))]
    iso_level: Option<i32>,
}

impl LocalTransaction for WindowsTransaction {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn export(&mut self, whereabouts: &[u8]) -> Result<Vec<u8>, DtcError> {
        join_mta();
        let mut factory: *mut c_void = ptr::null_mut();
        // SAFETY: QueryInterface on a live dispenser with a valid out pointer.
        let hr = unsafe {
            (self.dispenser.vtbl::<IUnknownVtbl>().query_interface)(
                self.dispenser.0,
                &IID_ITRANSACTION_EXPORT_FACTORY,
                &mut factory,
            )
        };
        check("QueryInterface(ITransactionExportFactory)", hr)?;
        export_through(&Com(factory), &self.tx, whereabouts)
    }

    fn abort(&mut self) -> Result<(), DtcError> {
        join_mta();
        // SAFETY: `tx` is a live ITransaction; no reason, not retaining, synchronous.
        let hr =
            unsafe { (self.tx.vtbl::<ITransactionVtbl>().abort)(self.tx.0, ptr::null_mut(), 0, 0) };
        check("ITransaction::Abort", hr)
    }
}

/// The export proper, through an ITransactionExportFactory: Create(whereabouts) ->
/// ITransactionExport; Export(tx) -> the cookie's size; GetTransactionCookie -> the cookie.
/// Its own function so that the wine test can hand it a factory (wine's xolehlp has none).
fn export_through(factory: &Com, tx: &Com, whereabouts: &[u8]) -> Result<Vec<u8>, DtcError> {
    let mut export: *mut c_void = ptr::null_mut();
    // SAFETY: `factory` is an ITransactionExportFactory; the slice outlives the call.
    let hr = unsafe {
        (factory.vtbl::<ITransactionExportFactoryVtbl>().create)(
            factory.0,
            whereabouts.len() as u32,
            whereabouts.as_ptr(),
            &mut export,
        )
    };
    check("ITransactionExportFactory::Create", hr)?;
    let export = Com(export);
    let mut size = 0u32;
    // SAFETY: `export` is an ITransactionExport; `tx` an ITransaction (an IUnknown).
    let hr = unsafe { (export.vtbl::<ITransactionExportVtbl>().export)(export.0, tx.0, &mut size) };
    check("ITransactionExport::Export", hr)?;
    let mut cookie = vec![0u8; size as usize];
    let mut used = 0u32;
    // SAFETY: the buffer holds `size` bytes, as Export said the cookie needs.
    let hr = unsafe {
        (export
            .vtbl::<ITransactionExportVtbl>()
            .get_transaction_cookie)(export.0, tx.0, size, cookie.as_mut_ptr(), &mut used)
    };
    check("ITransactionExport::GetTransactionCookie", hr)?;
    cookie.truncate(used as usize);
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};

    /// Wine's ntdll exports `wine_get_version`; Windows' does not.
    fn under_wine() -> bool {
        // SAFETY: NUL-terminated literals; ntdll is always loaded.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }

    /// Under wine (scripts/test runs the library's tests there): wine's xolehlp is a partial
    /// stub with a dispenser whose BeginTransaction makes a transaction object and no export
    /// factory. That exercises the real linking of DtcGetTransactionManagerExW and the vtable
    /// slots this file calls (BeginTransaction, GetTransactionInfo, QueryInterface, Abort): a
    /// wrong slot would call another method and not give these answers. A real MSDTC is still
    /// only on Windows (docs/mssql.md).
    #[test]
    fn com_plumbing_against_wines_xolehlp() {
        if !under_wine() {
            eprintln!("SKIP: not under wine; a real MSDTC is tested by real_windows_msdtc_enlists");
            return;
        }
        let mut tx = match begin_transaction() {
            Ok(tx) => tx,
            Err(e) => panic!("wine's dispenser should begin a (stub) transaction: {e}"),
        };
        // GetTransactionInfo (slot 5): wine's stub succeeds and hands back the isolation level
        // BeginTransaction was given, and a zero unit of work. Another slot (Commit, Abort)
        // would have answered E_NOTIMPL and left no level.
        assert_eq!(tx.iso_level, Some(ISOLATION_READ_COMMITTED));
        assert_eq!(tx.id, "00000000-0000-0000-0000-000000000000");
        // Wine's dispenser has no ITransactionExportFactory.
        let err = tx.export(b"whereabouts").unwrap_err();
        assert_eq!(
            err.call, "QueryInterface(ITransactionExportFactory)",
            "{err}"
        );
        assert_eq!(err.hresult, 0x8000_4002, "E_NOINTERFACE expected: {err}");
        // Abort (slot 4): wine's stub answers E_NOTIMPL, named as Abort's failure. (Commit, slot
        // 3, answers the same under wine: that these two are not swapped rests on slot 5 above
        // and the struct's order, from transact.h.)
        let err = tx.abort().unwrap_err();
        assert_eq!(
            (err.call, err.hresult),
            ("ITransaction::Abort", 0x8000_4001),
            "E_NOTIMPL expected: {err}"
        );
        export_through_a_factory_laid_out_by_mingws_headers(&tx.tx);
    }

    type FakeFactory = unsafe extern "C" fn(*mut *mut c_void) -> HRESULT;
    type FakeResults = unsafe extern "C" fn(HRESULT, HRESULT, HRESULT);
    type FakeLog = unsafe extern "C" fn(*mut u8, i32) -> i32;

    /// tests/wine/fake-export.c, built next to this executable by the wine runner: MSDTC's
    /// export interfaces with the vtables of mingw-w64's txcoord.h, filled by member name. Each
    /// method logs its call and answers what the test set. A slot out of place in this file's
    /// vtables would call another method there and change the log.
    fn export_through_a_factory_laid_out_by_mingws_headers(tx: &Com) {
        use windows_sys::Win32::System::LibraryLoader::LoadLibraryA;
        // SAFETY: NUL-terminated names; the functions have the signatures fake-export.c gives.
        let (factory, results, log) = unsafe {
            let dll = LoadLibraryA(c"fake-export.dll".as_ptr().cast());
            assert!(
                !dll.is_null(),
                "fake-export.dll is missing: run under tests/wine/runner, which builds it"
            );
            let get = |name: &std::ffi::CStr| {
                GetProcAddress(dll, name.as_ptr().cast()).expect("fake-export.dll export")
            };
            (
                std::mem::transmute::<_, FakeFactory>(get(c"fake_export_factory")),
                std::mem::transmute::<_, FakeResults>(get(c"fake_set_results")),
                std::mem::transmute::<_, FakeLog>(get(c"fake_call_log")),
            )
        };
        let run = |create: u32, export: u32, cookie: u32| {
            let mut f: *mut c_void = ptr::null_mut();
            // SAFETY: see above; the factory is a static object of the DLL.
            unsafe {
                results(create as HRESULT, export as HRESULT, cookie as HRESULT);
                assert_eq!(factory(&mut f), 0);
            }
            let outcome = export_through(&Com(f), tx, b"whereabouts");
            let mut buf = [0u8; 512];
            // SAFETY: the buffer's length is passed.
            let n = unsafe { log(buf.as_mut_ptr(), buf.len() as i32) };
            (
                outcome,
                String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
            )
        };
        // Every call reaches its own method: Create gets the whereabouts, Export the
        // transaction (an ITransaction, QueryInterface S_OK), GetTransactionCookie the size
        // Export asked for; the cookie comes back; both objects are released.
        let (cookie, calls) = run(0, 0, 0);
        assert_eq!(cookie.as_deref(), Ok(&b"COOKIE!"[..]), "{calls}");
        assert_eq!(
            calls,
            "Create(cb=11,first=119);Export(tx_qi=0x00000000);\
             GetTransactionCookie(cb=7,tx=set);Export.Release;Factory.Release"
        );
        // Each method's failure is reported as that method's, with its HRESULT.
        for (create, export, cookie, call, hresult) in [
            (
                dtc_hr::XACT_E_CONNECTION_DOWN,
                0,
                0,
                "ITransactionExportFactory::Create",
                dtc_hr::XACT_E_CONNECTION_DOWN,
            ),
            (
                0,
                dtc_hr::XACT_E_PUSH_COMM_FAILURE,
                0,
                "ITransactionExport::Export",
                dtc_hr::XACT_E_PUSH_COMM_FAILURE,
            ),
            (
                0,
                0,
                0x8000_4005,
                "ITransactionExport::GetTransactionCookie",
                0x8000_4005,
            ),
        ] {
            let (outcome, calls) = run(create, export, cookie);
            let err = outcome.unwrap_err();
            assert_eq!((err.call, err.hresult), (call, hresult), "{calls}");
        }
    }

    use super::super::dtc as dtc_hr;

    #[test]
    fn guid_text_layout() {
        let b = [
            0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(guid_text(&b), "12345678-1234-5678-0102-030405060708");
    }
}
