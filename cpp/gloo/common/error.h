// ProcessGroupGloo.hpp includes <gloo/common/error.h>; the shim declares what it needs in one place.
#pragma once
#include "../declarations.h"
