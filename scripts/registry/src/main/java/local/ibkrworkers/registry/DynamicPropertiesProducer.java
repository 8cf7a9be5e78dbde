package local.ibkrworkers.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

/**
 * The list of settings an administrator may change at run time, which the registry's config-index
 * extension would otherwise compute at build time: none here, so every setting keeps the value it is
 * started with (a development registry needs nothing else).
 */
public class DynamicPropertiesProducer {

    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
