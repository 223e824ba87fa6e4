/* A stand-in for Windows' bcryptprimitives.dll, for running dtcprobe.exe under wine 8.
 *
 * Rust's std (1.78 and later) imports ProcessPrng from bcryptprimitives.dll for its random
 * numbers (HashMap seeds); Windows 10+ ships it, wine 8 does not, so the exe would not even
 * start. This DLL, placed next to the exe, implements ProcessPrng over advapi32's RtlGenRandom
 * (exported as SystemFunction036), which wine has. It is test scaffolding only: it is never
 * shipped and never needed on a real Windows host.
 *
 * Built by tests/wine/build-shim with x86_64-w64-mingw32-gcc (Debian gcc-mingw-w64-x86-64).
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* RtlGenRandom takes a ULONG length: feed larger requests in chunks. */
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
