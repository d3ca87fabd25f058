// ProcessGroupGloo.hpp includes <gloo/algorithm.h>; the shim declares what it needs in one place.
#pragma once
#include "declarations.h"
