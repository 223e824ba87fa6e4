/* A stand-in for MSDTC's export objects, for the wine test of src/hops/mssql/enlist/windows.rs
 * (com_plumbing_against_wines_xolehlp). Wine's xolehlp has no ITransactionExportFactory, so
 * dtcprobe's calls to Create, Export and GetTransactionCookie would never run under wine. This
 * DLL implements the two interfaces with the vtable structs of mingw-w64's own txcoord.h
 * (filled by member NAME, not by position): if dtcprobe's hand-written vtable layout put a
 * method in the wrong slot, its call would land in another function here and the test, which
 * reads the call log, would fail. Each method records its call and returns the HRESULT the test
 * set, so dtcprobe's handling of every answer is checked too.
 *
 * Built by tests/wine/build-fake-export (the wine runner puts it next to the test executable).
 * Exports: fake_export_factory(void **out), fake_set_results(create, export, cookie),
 * fake_call_log(char *buf, int len). */

/* No COBJMACROS: mingw-w64's txcoord.h has a broken macro line in that section. */
#include <windows.h>
#include <stdio.h>
#include <string.h>
#include <transact.h>
#include <txcoord.h>

static char call_log[1024];
static HRESULT create_result = S_OK, export_result = S_OK, cookie_result = S_OK;
static const BYTE cookie[] = { 'C', 'O', 'O', 'K', 'I', 'E', '!' };

static void log_call(const char *text)
{
    if (strlen(call_log) + strlen(text) + 2 < sizeof(call_log)) {
        if (call_log[0]) strcat(call_log, ";");
        strcat(call_log, text);
    }
}

/* ITransactionExport */
static HRESULT WINAPI exp_qi(ITransactionExport *This, REFIID riid, void **ppv)
{
    (void)riid;
    *ppv = This;
    return S_OK;
}
static ULONG WINAPI exp_addref(ITransactionExport *This) { (void)This; return 2; }
static ULONG WINAPI exp_release(ITransactionExport *This) { (void)This; log_call("Export.Release"); return 1; }
static HRESULT WINAPI exp_export(ITransactionExport *This, IUnknown *tx, ULONG *size)
{
    char text[96];
    ITransaction *t = NULL;
    /* The transaction dtcprobe passes must be a real ITransaction (wine's stub one). */
    HRESULT qi = tx ? tx->lpVtbl->QueryInterface(tx, &IID_ITransaction, (void **)&t) : E_POINTER;
    if (t) t->lpVtbl->Release(t);
    snprintf(text, sizeof text, "Export(tx_qi=0x%08lx)", (unsigned long)qi);
    log_call(text);
    (void)This;
    if (FAILED(export_result)) return export_result;
    *size = sizeof cookie;
    return S_OK;
}
static HRESULT WINAPI exp_cookie(ITransactionExport *This, IUnknown *tx, ULONG cb, byte *buf, ULONG *used)
{
    char text[96];
    snprintf(text, sizeof text, "GetTransactionCookie(cb=%lu,tx=%s)", (unsigned long)cb, tx ? "set" : "null");
    log_call(text);
    (void)This;
    if (FAILED(cookie_result)) return cookie_result;
    if (cb < sizeof cookie) return E_INVALIDARG;
    memcpy(buf, cookie, sizeof cookie);
    *used = sizeof cookie;
    return S_OK;
}
static ITransactionExportVtbl export_vtbl = {
    .QueryInterface = exp_qi,
    .AddRef = exp_addref,
    .Release = exp_release,
    .Export = exp_export,
    .GetTransactionCookie = exp_cookie,
};
static ITransactionExport the_export = { &export_vtbl };

/* ITransactionExportFactory */
static HRESULT WINAPI fac_qi(ITransactionExportFactory *This, REFIID riid, void **ppv)
{
    (void)riid;
    *ppv = This;
    return S_OK;
}
static ULONG WINAPI fac_addref(ITransactionExportFactory *This) { (void)This; return 2; }
static ULONG WINAPI fac_release(ITransactionExportFactory *This) { (void)This; log_call("Factory.Release"); return 1; }
static HRESULT WINAPI fac_remote_class(ITransactionExportFactory *This, CLSID *clsid)
{
    (void)This; (void)clsid;
    log_call("GetRemoteClassId");
    return E_NOTIMPL;
}
static HRESULT WINAPI fac_create(ITransactionExportFactory *This, ULONG cb, byte *whereabouts, ITransactionExport **out)
{
    char text[96];
    snprintf(text, sizeof text, "Create(cb=%lu,first=%u)", (unsigned long)cb, cb ? whereabouts[0] : 0u);
    log_call(text);
    (void)This;
    if (FAILED(create_result)) return create_result;
    *out = &the_export;
    return S_OK;
}
static ITransactionExportFactoryVtbl factory_vtbl = {
    .QueryInterface = fac_qi,
    .AddRef = fac_addref,
    .Release = fac_release,
    .GetRemoteClassId = fac_remote_class,
    .Create = fac_create,
};
static ITransactionExportFactory the_factory = { &factory_vtbl };

__declspec(dllexport) HRESULT fake_export_factory(void **out)
{
    call_log[0] = 0;
    *out = &the_factory;
    return S_OK;
}

__declspec(dllexport) void fake_set_results(HRESULT create, HRESULT export_, HRESULT cookie_)
{
    create_result = create;
    export_result = export_;
    cookie_result = cookie_;
}

__declspec(dllexport) int fake_call_log(char *buf, int len)
{
    int n = (int)strlen(call_log);
    if (n >= len) n = len - 1;
    memcpy(buf, call_log, n);
    buf[n] = 0;
    return n;
}
