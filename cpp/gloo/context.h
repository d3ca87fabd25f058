// ProcessGroupGloo.hpp includes <gloo/context.h>; the shim declares what it needs in one place.
#pragma once
#include "declarations.h"
