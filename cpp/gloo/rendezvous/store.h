// ProcessGroupGloo.hpp includes <gloo/rendezvous/store.h>; the shim declares what it needs in one place.
#pragma once
#include "../declarations.h"
