/* A stand-in service registered under the name "MSDTC" in a test's wine prefix.
 *
 * Why: wine has no MSDTC service, so wine's service control manager can only ever answer
 * "does not exist" for it. The `msdtc` kind's tests need the SCM to report the other states
 * (running, stopped) through the same OpenServiceW/QueryServiceStatus path a real Windows host
 * answers. This program does nothing but be a well-behaved service: it reports RUNNING, and
 * STOPPED when told to stop. It proves the reader's SCM query, never anything about MSDTC itself.
 *
 * Built by tests/wine/build-msdtc-standin (x86_64-w64-mingw32-gcc), used by tests/msdtc_config.rs.
 */
#include <windows.h>

static SERVICE_STATUS_HANDLE status_handle;
static SERVICE_STATUS status;
static HANDLE stop_event;

static void report(DWORD state)
{
    status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    status.dwCurrentState = state;
    status.dwControlsAccepted =
        state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
    status.dwWin32ExitCode = NO_ERROR;
    SetServiceStatus(status_handle, &status);
}

static DWORD WINAPI control(DWORD code, DWORD event_type, LPVOID event_data, LPVOID context)
{
    (void)event_type;
    (void)event_data;
    (void)context;
    switch (code) {
    case SERVICE_CONTROL_STOP:
    case SERVICE_CONTROL_SHUTDOWN:
        report(SERVICE_STOP_PENDING);
        SetEvent(stop_event);
        return NO_ERROR;
    case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;
    default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
}

static void WINAPI service_main(DWORD argc, LPWSTR *argv)
{
    (void)argc;
    (void)argv;
    status_handle = RegisterServiceCtrlHandlerExW(L"MSDTC", control, NULL);
    if (!status_handle)
        return;
    stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    report(SERVICE_RUNNING);
    /* Bounded: a stand-in left behind by a killed test ends by itself within 10 minutes. */
    WaitForSingleObject(stop_event, 10 * 60 * 1000);
    report(SERVICE_STOPPED);
}

int main(void)
{
    SERVICE_TABLE_ENTRYW table[] = {{(LPWSTR)L"MSDTC", service_main}, {NULL, NULL}};
    return StartServiceCtrlDispatcherW(table) ? 0 : 1;
}
