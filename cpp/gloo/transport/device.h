// ProcessGroupGloo.hpp includes <gloo/transport/device.h>; the shim declares what it needs in one place.
#pragma once
#include "../declarations.h"
