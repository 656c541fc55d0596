// The explicit instantiations tests/scalar_kernels.hpp declares extern (built with baseline flags).
#include "scalar_kernels.hpp"

MOE_TEST_SCALAR_KERNEL_LIST(MOE_TEST_SCALAR_KERNEL)
