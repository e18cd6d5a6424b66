/* Runs the TVM kernel {{ symbol | comment }} of a cross-compiled object on files, without the TVM runtime.
 *
 * Usage: harness DIR. Reads argument i of every input from DIR/i.bin (raw, C order), calls the
 * kernel once and writes every output argument to DIR/i.bin. The backend hooks the object calls
 * are provided here: workspaces from aligned_alloc, and parallel loops run task by task in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tvm/ffi/c_api.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} ParallelEnv;
typedef int (*ParallelLambda)(int task_id, ParallelEnv* env, void* closure);

/* The object defines these hook pointers only where it calls them. */
extern void* __TVMBackendParallelLaunch __attribute__((weak));
extern void* __TVMBackendAllocWorkspace __attribute__((weak));
extern void* __TVMBackendFreeWorkspace __attribute__((weak));
int __tvm_ffi_{{ symbol | identifier }}(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

static int parallel_launch(ParallelLambda lambda, void* closure, int num_task) {
  ParallelEnv env = {NULL, num_task > 0 ? num_task : {{ tasks }}};
  for (int task = 0; task < env.num_task; ++task) {
    if (lambda(task, &env, closure) != 0) return -1;
  }
  return 0;
}

static void* alloc_workspace(int device_type, int device_id, uint64_t size, int dtype_code, int dtype_bits) {
  (void)device_type; (void)device_id; (void)dtype_code; (void)dtype_bits;
  return aligned_alloc(64, (size + 63) / 64 * 64);
}

static int free_workspace(int device_type, int device_id, void* data) {
  (void)device_type; (void)device_id;
  free(data);
  return 0;
}

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t count) {
  fprintf(stderr, "%s:", kind);
  for (int32_t i = 0; i < count; ++i) fprintf(stderr, " %s", parts[i]);
  fprintf(stderr, "\n");
}

static int transfer(const char* folder, int index, void* data, size_t size, int reading) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%d.bin", folder, index);
  FILE* file = fopen(path, reading ? "rb" : "wb");
  if (file == NULL) {
    fprintf(stderr, "cannot open %s\n", path);
    return -1;
  }
  size_t done = reading ? fread(data, 1, size, file) : fwrite(data, 1, size, file);
  fclose(file);
  if (done != size) {
    fprintf(stderr, "%s: %zu of %zu bytes\n", path, done, size);
    return -1;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  if (&__TVMBackendParallelLaunch) __TVMBackendParallelLaunch = (void*)&parallel_launch;
  if (&__TVMBackendAllocWorkspace) __TVMBackendAllocWorkspace = (void*)&alloc_workspace;
  if (&__TVMBackendFreeWorkspace) __TVMBackendFreeWorkspace = (void*)&free_workspace;
{% for arg in arguments %}
  int64_t shape{{ loop.index0 }}[] = { {{- arg.shape | join(", ") -}} };
  size_t size{{ loop.index0 }} = {{ arg.nbytes }};
  DLTensor tensor{{ loop.index0 }} = {aligned_alloc(64, (size{{ loop.index0 }} + 63) / 64 * 64), {kDLCPU, 0}, {{ arg.shape | length }},
                        { {{- arg.code }}, {{ arg.bits }}, 1}, shape{{ loop.index0 }}, NULL, 0};
{% if arg.input %}
  if (transfer(argv[1], {{ loop.index0 }}, tensor{{ loop.index0 }}.data, size{{ loop.index0 }}, 1) != 0) return 1;
{% endif %}
{% endfor %}
  TVMFFIAny args[{{ arguments | length }}];
  memset(args, 0, sizeof args);
{% for arg in arguments %}
  args[{{ loop.index0 }}].type_index = kTVMFFIDLTensorPtr;
  args[{{ loop.index0 }}].v_ptr = &tensor{{ loop.index0 }};
{% endfor %}
  TVMFFIAny result;
  memset(&result, 0, sizeof result);
  if (__tvm_ffi_{{ symbol | identifier }}(NULL, args, {{ arguments | length }}, &result) != 0) return 3;
{% for arg in arguments %}
{% if not arg.input %}
  if (transfer(argv[1], {{ loop.index0 }}, tensor{{ loop.index0 }}.data, size{{ loop.index0 }}, 0) != 0) return 1;
{% endif %}
{% endfor %}
  return 0;
}
