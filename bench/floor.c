/*
 * The floor for `make bench`: the smallest single-threaded reader of the
 * attributes `vfioctl list` shows, with no parsing beyond what printing needs.
 * For each function under SYSFS/bus/pci/devices: vendor, device,
 * subsystem_vendor, subsystem_device, class, the config header (revision,
 * header type), driver_override, numa_node, the driver, driver/module,
 * iommu_group and physfn links, sriov_totalvfs and sriov_numvfs; then each
 * IOMMU group's member list. Opens are relative to the device directory.
 * Prints one line per function.
 *
 * usage: floor [SYSFS]   (default /sys)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int read_at(int dir, const char *name, char *buf, size_t size)
{
	int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == 0))
		n--;
	buf[n] = 0;
	return (int)n;
}

static const char *link_base(int dir, const char *name, char *buf, size_t size)
{
	ssize_t n = readlinkat(dir, name, buf, size - 1);
	if (n < 0)
		return "-";
	buf[n] = 0;
	char *slash = strrchr(buf, '/');
	return slash ? slash + 1 : buf;
}

int main(int argc, char **argv)
{
	const char *sysfs = argc > 1 ? argv[1] : "/sys";
	char path[4096];
	snprintf(path, sizeof path, "%s/bus/pci/devices", sysfs);
	DIR *devices = opendir(path);
	if (!devices) {
		perror(path);
		return 1;
	}
	int devices_fd = dirfd(devices);
	struct dirent *e;
	unsigned count = 0;
	while ((e = readdir(devices))) {
		if (e->d_name[0] == '.')
			continue;
		int dir = openat(devices_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dir < 0)
			continue;
		char vendor[64], device[64], svendor[64], sdevice[64], class[64];
		char override[256], numa[64], total[64], num[64];
		char driver[4096], module[4096], group[4096], physfn[4096];
		unsigned char config[64] = {0};
		read_at(dir, "vendor", vendor, sizeof vendor);
		read_at(dir, "device", device, sizeof device);
		read_at(dir, "subsystem_vendor", svendor, sizeof svendor);
		read_at(dir, "subsystem_device", sdevice, sizeof sdevice);
		read_at(dir, "class", class, sizeof class);
		int fd = openat(dir, "config", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (read(fd, config, sizeof config) < 0)
				config[0] = 0xff;
			close(fd);
		}
		if (read_at(dir, "driver_override", override, sizeof override) < 0)
			strcpy(override, "-");
		if (read_at(dir, "numa_node", numa, sizeof numa) < 0)
			strcpy(numa, "-");
		const char *drv = link_base(dir, "driver", driver, sizeof driver);
		const char *mod = drv[0] == '-' ? "-" : link_base(dir, "driver/module", module, sizeof module);
		const char *grp = link_base(dir, "iommu_group", group, sizeof group);
		const char *pf = link_base(dir, "physfn", physfn, sizeof physfn);
		if (read_at(dir, "sriov_totalvfs", total, sizeof total) < 0)
			strcpy(total, "-");
		else if (read_at(dir, "sriov_numvfs", num, sizeof num) < 0)
			strcpy(num, "-");
		printf("%s %s:%s %s:%s %s rev %02x hdr %02x %s %s %s %s %s %s %s\n", e->d_name, vendor,
		       device, svendor, sdevice, class, config[8], config[14], drv, mod, override, grp,
		       numa, pf, total);
		close(dir);
		count++;
	}
	closedir(devices);

	snprintf(path, sizeof path, "%s/kernel/iommu_groups", sysfs);
	DIR *groups = opendir(path);
	unsigned members = 0;
	if (groups) {
		int groups_fd = dirfd(groups);
		while ((e = readdir(groups))) {
			if (e->d_name[0] == '.')
				continue;
			char sub[512];
			snprintf(sub, sizeof sub, "%s/devices", e->d_name);
			int fd = openat(groups_fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd < 0)
				continue;
			DIR *d = fdopendir(fd);
			struct dirent *m;
			while ((m = readdir(d)))
				if (m->d_name[0] != '.')
					members++;
			closedir(d);
		}
		closedir(groups);
	}
	printf("%u functions, %u group members\n", count, members);
	return 0;
}
